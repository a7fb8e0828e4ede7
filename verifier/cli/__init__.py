"""`tlog-verify`: argument parsing, calls into `verifier.client`, and exit codes."""
