"""All I/O of the verifier: `Fetcher`s (HTTP, a directory, memory) under `LogClient`,
state directories, following a log, scanning, release verification, the auditor and the
monitor (each a pure judge apart from its storage, metrics and run loop).
"""
