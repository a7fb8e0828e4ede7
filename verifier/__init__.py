"""tlog's verifier: the protocol (pure), the client that fetches and checks, and `tlog-verify`.

It never imports the service (`tlog`); the service takes its protocol code from here.
"""
