import sys

from verifier.cli.main import main

sys.exit(main())
