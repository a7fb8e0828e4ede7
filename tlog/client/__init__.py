"""Python clients of a tlog log: what `tlog publish` is built on (tlog.client.publish).

A client speaks HTTP to a log and checks its answers with verifier/ code; it never imports
the server's layers (store, log, http) or the command line (tests/test_boundary.py).
"""
