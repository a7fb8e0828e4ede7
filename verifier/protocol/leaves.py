"""What a scan of a whole log works on and keeps, without I/O: a bundle's leaves as fetched,
and each entry after validation. The fetching is verifier.client.scan's; audit and monitor
judge what these give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from verifier.protocol.entries.errors import EntryError
from verifier.protocol.entries.kinds import parse_log_leaf
from verifier.protocol.merkle import leaf_hash
from verifier.protocol.package_state import MAP_ROOT_KIND, StateError, parse_map_root_entry

# Every map-root/v1 leaf starts so (JCS orders the members: kind, root, size). The log writes
# them itself, so they are not in the KINDS table and parse_log_leaf refuses them.
_MAP_ROOT_START = b'{"kind":"map-root/v1",'


class Fetched(NamedTuple):
    """One entry bundle's leaves from `first` on, and the log's level-0 tile over them when
    asked for and the bundle is full (None otherwise)."""

    first: int
    leaves: list[bytes]
    tile: bytes | None


@dataclass(frozen=True)
class Checked:
    """One entry after validation: its entry when valid, the reason when not."""

    index: int
    leaf_hash: bytes
    entry: dict[str, Any] | None
    error: str | None


def check_leaves(first_index: int, leaves: list[bytes]) -> list[Checked]:
    """Validate consecutive leaves of any kind the log accepts (release/v1, the registry and
    lifecycle kinds) and the log's own map-root/v1 leaves: schema, canonical form, signature.
    Who may sign registry entries is the replay's question (verifier.protocol.registry.Registry),
    not this one; whether a map root is right is map_replay's."""
    out = []
    for i, leaf in enumerate(leaves):
        if leaf.startswith(_MAP_ROOT_START):
            out.append(_check_map_root(first_index + i, leaf))
            continue
        try:
            entry = parse_log_leaf(leaf)
            out.append(Checked(first_index + i, entry.leaf_hash, entry.entry, None))
        except EntryError as exc:
            out.append(Checked(first_index + i, leaf_hash(leaf), None, f"{exc.code}: {exc}"))
    return out


def hash_leaves(first_index: int, leaves: list[bytes]) -> list[bytes]:
    return [leaf_hash(leaf) for leaf in leaves]


def _check_map_root(index: int, leaf: bytes) -> Checked:
    """A map-root/v1 leaf: its entry is {"kind", "size", "root"} when well formed."""
    try:
        size, root = parse_map_root_entry(leaf)
    except StateError as exc:
        return Checked(index, leaf_hash(leaf), None, f"invalid_entry: {exc}")
    return Checked(index, leaf_hash(leaf),
                   {"kind": MAP_ROOT_KIND, "size": size, "root": root.hex()}, None)
