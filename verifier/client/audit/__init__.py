"""The auditor: prove a log only ever grew (`incremental`), and re-check everything in it
(`full`, which recomputes the tree in `tree` and keeps its progress with `progress`)."""
