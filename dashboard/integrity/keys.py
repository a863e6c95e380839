"""Ed25519 key files for signing tree heads (``cryptography``), pure.

The notary's private key lives in a file that never enters the database (PEM, PKCS#8);
the dashboard, ``verify`` and ``verify-export`` need only the public keys (PEM,
SubjectPublicKeyInfo). A key is named by its *key id*: the first 16 hex digits of the
SHA-256 of the 32 raw public-key bytes, which each head records, so old heads stay
verifiable after a key rotation as long as the old public key is still listed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "KeyFileError",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "load_public_keys",
]


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not an Ed25519 key of the right kind."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"{what} {path} is a directory, not a key file") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    data = _read(path, "The private key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            f"The private key file {path} is encrypted; give it unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"The private key file {path} is not a PEM private key "
            "(make one with `audit-dashboard keygen`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"The private key file {path} holds a key of type "
            f"{type(key).__name__.removeprefix('_')}, not an Ed25519 key"
        )
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    data = _read(path, "The public key file")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY" in data:
            raise KeyFileError(
                f"The public key file {path} holds a private key; give the public one "
                "(the private key must stay with the notary)"
            ) from None
        raise KeyFileError(f"The public key file {path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            f"The public key file {path} holds a key of type "
            f"{type(key).__name__.removeprefix('_')}, not an Ed25519 key"
        )
    return key


def load_public_keys(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Ed25519PublicKey]:
    """``{key_id: key}`` for every file; an empty list is an error (nothing to check by)."""
    keys = {}
    for path in paths:
        key = load_public_key(path)
        keys[key_id(key)] = key
    if not keys:
        raise KeyFileError("No public key file given: heads cannot be checked without one")
    return keys


def generate_keypair(
    private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]
) -> str:
    """Write a new key pair (the private file 0600, never overwritten); return its key id."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{private_path} exists already; not overwriting a key") from None
    except OSError as exc:
        raise KeyFileError(f"{private_path} cannot be written: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    Path(public_path).write_bytes(public_pem)
    return key_id(key.public_key())
