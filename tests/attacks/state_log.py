"""The package state map of an in-memory test log (evil_log.Tree, witness_support.TiledLog):
the map-root leaf each append ends with, and the /v1/package-state answer, computed from
the leaves as a monitor would (verifier.protocol.package_state)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from verifier.protocol.merkle import leaf_hash
from verifier.protocol.note import b64encode
from verifier.protocol.package_state import (
    PackageState,
    Record,
    StateBuilder,
    StateError,
    package_key,
    parse_map_root_entry,
)
from verifier.protocol.statemap import SparseMap


def state_map(leaves: Sequence[bytes]) -> tuple[SparseMap, dict[str, PackageState]]:
    """The package states of `leaves` and their map. Lenient where tlog would refuse (a
    version released twice is listed twice): an evil log commits to what it logged."""
    builder = StateBuilder()
    for index, leaf in enumerate(leaves):
        try:
            obj = json.loads(leaf)
        except ValueError:
            continue
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str)
                                                for k in ("kind", "package", "version")):
            continue
        counter = obj.get("counter") if isinstance(obj.get("counter"), int) else None
        record = Record(index, leaf_hash(leaf), obj["kind"], obj["package"], obj["version"],
                        counter)
        try:
            builder.apply([record])
        except StateError:
            state = builder.states.get(record.package)
            if state is not None and record.kind == "release/v1":
                state["releases"].append({"version": record.version, "index": index,
                                          "leaf_hash": record.leaf_hash.hex(),
                                          "counter": counter})
            builder.last_index = index
    smap = SparseMap()
    smap.apply(smap.update(builder.updates(builder.states)))
    return smap, builder.states


def package_state_answer(leaves: Sequence[bytes], package: str,
                         size: int) -> dict[str, Any] | None:
    """The /v1/package-state answer over the tree of `leaves[:size]`, honestly proven; None
    if that tree does not end with a map root."""
    if not 1 <= size <= len(leaves):
        return None
    try:
        covered, _ = parse_map_root_entry(leaves[size - 1])
    except StateError:
        return None
    smap, states = state_map(leaves[:covered])
    return {"package": package, "size": size, "map_root": smap.root().hex(),
            "state": states.get(package), "proof": b64encode(smap.prove(package_key(package)))}
