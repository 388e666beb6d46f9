"""Signed bundles: an Ed25519 signature over ``manifest.json``'s bytes, in ``manifest.sig``.

The manifest lists every file of the bundle with its sha256 (``export.format``), so one
signature over it vouches for the whole bundle. ``walrus bundle keygen`` makes a key pair,
``walrus export --sign KEY`` (or ``walrus bundle sign``) writes the signature, and a service
given ``WALRUS_TRUSTED_KEYS`` refuses a bundle whose signature is missing or made by no
trusted key. Keys are PEM files: PKCS#8 for the private key, SubjectPublicKeyInfo for the
public one, as ``openssl genpkey -algorithm ed25519`` writes them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from export.format import (
    MANIFEST,
    READ_ONLY,
    SIGNATURE,
    BundleError,
    Manifest,
    seal,
    write_manifest,
)


class SignatureError(BundleError):
    """A bundle's signature is missing, malformed or made by no trusted key; or a key file
    cannot be read as an Ed25519 key."""


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of its raw bytes' sha256."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out: Path, name: str = "walrus-signing") -> tuple[Path, Path]:
    """``out/NAME.key`` (private, mode 0600) and ``out/NAME.pub``; never overwrites."""
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"{path} exists: choose another --out or --name")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not a readable PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 key")
    return key


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """The trusted keys: one PEM public key file, or every ``*.pub`` in a directory."""
    files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
    if not files:
        raise SignatureError(f"{path}: no *.pub key files")
    keys = []
    for file in files:
        try:
            key = serialization.load_pem_public_key(file.read_bytes())
        except (OSError, ValueError) as exc:
            raise SignatureError(f"{file}: not a readable PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError(f"{file}: not an Ed25519 key")
        keys.append(key)
    return keys


def sign_bundle(bundle: Path, private_key: Path) -> str:
    """Write ``manifest.sig`` for the bundle's manifest as it is now (renamed into place
    whole); returns the signing key's id."""
    key = load_private_key(private_key)
    signature = key.sign((bundle / MANIFEST).read_bytes())
    tmp = bundle / f".{SIGNATURE}.tmp"
    tmp.unlink(missing_ok=True)  # left read-only by a signing that died
    tmp.write_text(base64.b64encode(signature).decode() + "\n")
    tmp.chmod(READ_ONLY)  # sealed like the files it vouches for
    tmp.replace(bundle / SIGNATURE)
    return key_id(key.public_key())


def check_signature(bundle: Path, keys: list[Ed25519PublicKey]) -> str:
    """The id of the trusted key that signed this bundle's manifest; ``SignatureError``
    when it is unsigned or no trusted key made its signature."""
    path = bundle / SIGNATURE
    if not path.is_file():
        raise SignatureError(f"{bundle}: unsigned (no {SIGNATURE}) and WALRUS_TRUSTED_KEYS is set")
    try:
        signature = base64.b64decode(path.read_text().strip(), validate=True)
    except ValueError as exc:
        raise SignatureError(f"{path}: not a base64 signature") from exc
    message = (bundle / MANIFEST).read_bytes()
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return key_id(key)
    raise SignatureError(
        f"{bundle}: the signature of {MANIFEST} verifies with none of the "
        f"{len(keys)} trusted key(s) (tampered, or signed with another key)"
    )


def finish(bundle: Path, manifest: Manifest, sign_with: Path | None) -> None:
    """The last writes of a new bundle version: its manifest, its signature (with a private
    key), every file made read-only."""
    write_manifest(bundle, manifest)
    if sign_with is not None:
        sign_bundle(bundle, sign_with)
    seal(bundle)
