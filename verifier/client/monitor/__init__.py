"""`tlog-verify monitor` below its command line (which is verifier.cli.monitor).

summary: what the worker processes keep of each entry; watch: the pure judge (events and
alerts); db: the SQLite state; metrics: Prometheus; run: the run loop that ties them together.
"""
