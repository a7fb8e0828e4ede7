import sys

from tlog.cli.main import main

sys.exit(main())
