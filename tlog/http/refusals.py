"""The HTTP status of each registry refusal (verifier.protocol.registry.Refusal.code).

The replay says why an entry may not come next; which status an HTTP client gets for that
is the service's choice (schema/openapi.yaml documents each code under its status): 403 for
who may sign what, 409 for a conflict with the log's state, 422 for what the entry itself
lacks.

``unknown_kind`` has no status: the service checks every entry into a kind of
verifier.protocol.entries.kinds.KINDS before the replay sees it, and the replay has a step
for each of them, so that refusal would be a bug, handled as any other internal error.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["REFUSAL_STATUS"]

REFUSAL_STATUS: Mapping[str, int] = MappingProxyType({
    "publisher_not_registered": 403,
    "publisher_revoked": 403,
    "package_not_owned": 403,
    "key_not_valid": 403,
    "not_authorized": 403,
    "key_revoked": 409,
    "unknown_key": 409,
    "counter_not_increasing": 409,
    "counter_required": 422,
})
