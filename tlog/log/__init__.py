"""The append path: the sequencer, the tree edge, the registry replay, proofs from tiles."""
