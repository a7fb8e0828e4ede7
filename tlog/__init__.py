"""tlog, the service: the append path (`log`), storage (`store`), the HTTP API (`http`) and
the `tlog` command (`cli`). Each layer imports only those before it: store, log, http, cli.
"""
