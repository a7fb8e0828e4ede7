"""The witness policy as C2SP tlog-policy text, for the entry page's first-visit keys.

The log holds its policy parsed (tlog.config); the browser's check parses this text with the
same grammar (static/explorer.js). Groups keep their order: a member must be defined on an
earlier line. Without a policy the text names the log alone with "quorum none".
"""

from __future__ import annotations

from verifier.protocol.policy import Policy


def policy_text(policy: Policy | None, log_vkey: str) -> str:
    if policy is None:
        return f"log {log_vkey}\nquorum none\n"
    lines = [f"log {log.key.text()}" for log in policy.logs]
    lines += [f"witness {w.name} {w.key.text()}" for w in policy.witnesses.values()]
    lines += [f"group {g.name} {g.threshold} {' '.join(g.members)}"
              for g in policy.groups.values()]
    lines.append(f"quorum {policy.quorum}")
    return "\n".join(lines) + "\n"
