"""Ed25519 signing keys of organisers: make one, load one, sign a manifest, verify a signature, fingerprints."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.bundles.manifest import BundleError

CONTEXT = b"aifarm-bundle-manifest-v1\0"  # signatures made for anything else never verify as a manifest's


def fingerprint(public_key: bytes) -> str:
    """The key's short name: the first 32 hex digits of the sha256 of its raw 32 bytes."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def normalise_fingerprint(text: str) -> str:
    """A fingerprint as typed (any case, with colons or spaces) in its stored form; raises ValueError."""
    flat = "".join(c for c in text.lower() if c not in ": ")
    if len(flat) != 32 or any(c not in "0123456789abcdef" for c in flat):
        raise ValueError(f"{text[:80]!r} is not a key fingerprint (32 hexadecimal digits)")
    return flat


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw public key of a private key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate(path: Path) -> Ed25519PrivateKey:
    """A new private key written to `path` (PEM, mode 0600); refuses to overwrite."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BundleError(f"{path} exists already; not overwritten") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def load_private(path: Path) -> Ed25519PrivateKey:
    """An organiser's private key from its PEM file; raises BundleError."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise BundleError(f"cannot read the key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 key (make one with `aifarm bundles keygen`)")
    return key


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """The signature of a manifest's bytes, base64."""
    return base64.b64encode(key.sign(CONTEXT + message)).decode()


def verify(public_key: bytes, message: bytes, signature: str) -> bool:
    """True when `signature` (base64) is `public_key`'s signature of the manifest bytes."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(signature, validate=True),
                                                              CONTEXT + message)
    except (InvalidSignature, ValueError):
        return False
    return True


def encode_public(public_key: bytes) -> str:
    """A public key as stored: base64 of its 32 raw bytes."""
    return base64.b64encode(public_key).decode()


def decode_public(text: str) -> bytes:
    """A stored public key's raw bytes; raises BundleError."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BundleError("a stored public key is malformed")
    return raw
