"""The protocol, pure and synchronous: no network, disk, process, thread or clock I/O.

Merkle math and the right edge (RFC 9162), tiles and proofs from tiles (C2SP tlog-tiles),
signed notes, checkpoints and keys (C2SP signed-note, tlog-checkpoint), what a client trusts
about a log (`trust`), trusted-state rules and the evidence layout (`state`), receipts
(C2SP tlog-proof), entry kinds (`entries`) and the publisher registry replay (`registry`).
"""
