"""A witness (c2sp.org/tlog-witness) run by parties who do not run the log: it cosigns a
log's checkpoints that extend what it cosigned before, and keeps evidence of those that do
not. The only part of verifier/ that runs a server (aiohttp); checks are in
verifier.protocol.witness, state in store.py, the request flow in service.py."""
