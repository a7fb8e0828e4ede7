"""The `tlog` command: serve, dev (with its local PostgreSQL), keys, publish, operators."""
