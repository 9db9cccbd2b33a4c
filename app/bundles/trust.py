"""This machine's trusted organiser keys: DATA_DIR/trusted_keys.json, changed only by the volunteer."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from app.runtime_files import write_private

TRUST_FILE = "trusted_keys.json"


@dataclass(frozen=True)
class TrustedKey:
    """One organiser key the volunteer trusts."""

    fingerprint: str
    public_key: str  # base64 of the raw key
    publisher: str
    trusted_at: float


class TrustStore:
    """The trusted keys of one data dir (read on every call: `aifarm bundles trust` applies to a running agent)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / TRUST_FILE

    def keys(self) -> dict[str, TrustedKey]:
        """Every trusted key by fingerprint (none when the file is missing or unreadable)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        out: dict[str, TrustedKey] = {}
        for item in raw.get("keys", []) if isinstance(raw, dict) else []:
            try:
                key = TrustedKey(str(item["fingerprint"]), str(item["public_key"]), str(item.get("publisher", "")),
                                 float(item.get("trusted_at", 0)))
            except (KeyError, TypeError, ValueError):
                continue
            out[key.fingerprint] = key
        return out

    def get(self, fingerprint: str) -> TrustedKey | None:
        """The trusted key with this fingerprint, or None."""
        return self.keys().get(fingerprint)

    def add(self, fingerprint: str, public_key: str, publisher: str) -> bool:
        """Trust a key; False when it was trusted already."""
        keys = self.keys()
        if fingerprint in keys:
            return False
        keys[fingerprint] = TrustedKey(fingerprint, public_key, publisher, time.time())
        self._write(keys)
        return True

    def remove(self, fingerprint: str) -> bool:
        """Stop trusting a key; False when it was not trusted."""
        keys = self.keys()
        if keys.pop(fingerprint, None) is None:
            return False
        self._write(keys)
        return True

    def _write(self, keys: dict[str, TrustedKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=1) + "\n")
