"""How the pages name a machine: its hostname, followed by the start of its client id where hostnames repeat."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

ID_PREFIX = 8


def client_labels(hostnames: Mapping[str, str | None]) -> dict[str, str]:
    """client id → label for the machines with a hostname; two machines called alike (a lab of `ubuntu`s, agents
    sharing a host) get their client id's first characters after it, so they stay apart on one page."""
    seen = Counter(name for name in hostnames.values() if name)
    return {client_id: name if seen[name] == 1 else f"{name} ({client_id[:ID_PREFIX]})"
            for client_id, name in hostnames.items() if name}
