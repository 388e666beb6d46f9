"""Bundles in object storage: published to an ``s3://`` (or any fsspec) prefix, pulled from it.

A store holds what a local bundles folder holds, as objects::

    PREFIX/<bundle_id>/manifest.json, manifest.sig and every file the manifest lists
    PREFIX/current      one line: the bundle id that serves (KServe's storageUri, Triton's
                        model repository, with walrus's manifest on top)

``BundleStore.publish`` uploads a checked local bundle, its files first, then its signature,
then its manifest, and moves ``current`` last: a torn upload has no manifest and is never
current, and a pull refuses a version without one. ``BundleStore.pull`` downloads the
version ``current`` names into a local bundles folder: the manifest first (checked on its
own, and its signature where trusted keys are given, before a byte of data), then every
file through a running sha256 that stops at the listed size; only a version whose every
file matched is renamed into place and becomes the local ``current``. Files a local version
already holds with the same sha256 are hard-linked, not downloaded (a catalog update moves
a few files of many), and in the store a file the current version already holds is copied
there, not uploaded again.

Any fsspec URL works: ``s3://`` through s3fs (installed with the serve extra; endpoint,
region and credentials from the usual ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` for MinIO or
another S3-compatible server), ``gs://`` with gcsfs, ``az://`` / ``abfs://`` with adlfs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import fsspec

from export.format import (
    CURRENT,
    MANIFEST,
    SIGNATURE,
    BundleError,
    FileEntry,
    Manifest,
    parse_manifest,
    read_manifest,
    resolve_bundle,
    seal,
    sha256_file,
    switch_current,
)
from export.signing import check_signature, load_public_keys

BUNDLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""What ``current`` may name: one path segment, so that a pointer never leads elsewhere."""
MAX_MANIFEST_BYTES = 64 << 20
BLOCK = 8 << 20
TRANSFERS = 8  # files moved at once: object stores give each request its own bandwidth
KEEP_LOCAL = 2  # a service's own folder: the version pulled and the one it replaces


class StorageError(BundleError):
    """Object storage could not be reached or read, or holds no (complete) bundle there."""


def is_remote(location: str | Path) -> bool:
    """A URL with a scheme (``s3://``, ``gs://``, ``memory://``), not a local path."""
    return "://" in str(location)


class BundleStore:
    """A bundles prefix in object storage (``s3://bucket/walrus/bundles``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        try:
            # Its own client: tests and a service that changes endpoints never share a cached one.
            self.fs, self.root = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)
        except (ImportError, ValueError) as exc:  # no fsspec backend for the scheme
            raise StorageError(f"{self.url}: {exc}") from None

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # ------------------------------------------------------------------ reading
    def current(self) -> str:
        """The bundle id that ``current`` names (one small read)."""
        with storage_errors(f"{self.url}/{CURRENT}"):
            raw: bytes = self.fs.cat_file(self._path(CURRENT))
        bundle_id = raw.decode("utf-8", "replace").strip()
        if not BUNDLE_ID.match(bundle_id):
            raise StorageError(f"{self.url}/{CURRENT} holds {bundle_id[:80]!r}, not a bundle id")
        return bundle_id

    def pull(
        self,
        bundles_dir: Path,
        bundle_id: str | None = None,
        trusted_keys: Path | None = None,
        keep: int | None = None,
        progress: Callable[[str], None] = lambda _message: None,
        spare: Collection[Path] = (),
    ) -> Path:
        """Download ``bundle_id`` (default: what ``current`` names) into ``bundles_dir`` and
        make it the local ``current``; every file checked against the manifest, the manifest
        against ``trusted_keys`` when given. A version already there is only switched to.
        ``keep``: then remove all but the newest ``keep`` versions (``None``: none removed),
        never those in ``spare``.
        Raises ``BundleError`` (``StorageError``, ``SignatureError``) and leaves the local
        ``current`` as it was."""
        bundle_id = bundle_id or self.current()
        if not BUNDLE_ID.match(bundle_id):
            raise StorageError(f"{bundle_id[:80]!r} is not a bundle id")
        bundles_dir.mkdir(parents=True, exist_ok=True)
        final = bundles_dir / bundle_id
        if not final.is_dir():  # a version is renamed into place only once it checked out
            with staging(bundles_dir, bundle_id) as tmp:
                manifest = self._manifest_into(tmp, bundle_id, trusted_keys)
                local = local_copies(bundles_dir)
                self._files_into(tmp, bundle_id, manifest, local, progress)
                seal(tmp)
                place(tmp, final)
        switch_current(bundles_dir, bundle_id)
        if keep is not None:
            prune(bundles_dir, keep, spare)
        return final

    def _manifest_into(self, tmp: Path, bundle_id: str, trusted_keys: Path | None) -> Manifest:
        """The version's manifest (and signature), checked before any data is read."""
        where = f"{self.url}/{bundle_id}"
        self._small_file(bundle_id, MANIFEST, tmp, required=True)
        self._small_file(bundle_id, SIGNATURE, tmp, required=False)
        manifest = parse_manifest(tmp)
        if manifest.bundle_id != bundle_id:
            raise StorageError(f"{where}: its manifest is bundle {manifest.bundle_id}")
        if trusted_keys is not None:
            check_signature(tmp, load_public_keys(trusted_keys))
        needed, free = sum(e.bytes for e in manifest.files.values()), free_bytes(tmp)
        if free < needed:
            raise StorageError(
                f"{where}: needs {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free in {tmp.parent}"
            )
        return manifest

    def _small_file(self, bundle_id: str, name: str, tmp: Path, required: bool) -> None:
        remote = self._path(bundle_id, name)
        with storage_errors(f"{self.url}/{bundle_id}/{name}"):
            if not required and not self.fs.exists(remote):
                return
            if self.fs.size(remote) > MAX_MANIFEST_BYTES:
                raise StorageError(f"{self.url}/{bundle_id}/{name}: larger than a manifest is")
            (tmp / name).write_bytes(self.fs.cat_file(remote))

    def _files_into(
        self,
        tmp: Path,
        bundle_id: str,
        manifest: Manifest,
        local: dict[str, Path],
        progress: Callable[[str], None],
    ) -> None:
        def one(item: tuple[str, FileEntry]) -> None:
            rel, entry = item
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if entry.sha256 in local:  # sealed, never written: safe to share
                os.link(local[entry.sha256], dest)
                if sha256_file(dest) != entry.sha256:  # changed since its own pull
                    raise StorageError(f"{local[entry.sha256]} differs from its manifest")
            else:
                self._download(f"{bundle_id}/{rel}", dest, entry)
            progress(rel)

        with ThreadPoolExecutor(TRANSFERS) as pool:
            list(pool.map(one, sorted(manifest.files.items())))

    def _download(self, rel: str, dest: Path, entry: FileEntry) -> None:
        """One object into ``dest`` through a running sha256; stops past the listed size."""
        digest, size, where = hashlib.sha256(), 0, f"{self.url}/{rel}"
        with storage_errors(where):
            source = self.fs.open(self._path(rel), "rb", block_size=BLOCK)
            with source, dest.open("wb") as out:
                while block := source.read(BLOCK):
                    size += len(block)
                    if size > entry.bytes:
                        break
                    digest.update(block)
                    out.write(block)
        if size != entry.bytes or digest.hexdigest() != entry.sha256:
            raise StorageError(
                f"{where} differs from its manifest ({'size' if size != entry.bytes else 'sha256'}"
                "): tampered with, or a torn upload; refused"
            )

    # ------------------------------------------------------------------ writing
    def publish(self, bundle: Path, progress: Callable[[str], None] = lambda _message: None) -> str:
        """Upload a local bundle (or a bundles folder's ``current``) after checking every
        file, then point ``current`` at it; returns its id. Publishing a version the store
        holds already only moves ``current`` (a rollback)."""
        bundle = resolve_bundle(bundle)
        manifest = read_manifest(bundle)
        bundle_id = manifest.bundle_id
        if not BUNDLE_ID.match(bundle_id):
            raise StorageError(f"{bundle}: bundle id {bundle_id!r} cannot name an object prefix")
        with storage_errors(self.url):
            if not self._holds(bundle, bundle_id):
                self._upload(bundle, manifest, progress)
            # Last: until now no reader could see this version.
            self.fs.pipe_file(self._path(CURRENT), f"{bundle_id}\n".encode())
        return bundle_id

    def _holds(self, bundle: Path, bundle_id: str) -> bool:
        """The store has this version complete: its manifest, uploaded last, is the same."""
        remote = self._path(bundle_id, MANIFEST)
        return bool(
            self.fs.exists(remote) and self.fs.cat_file(remote) == (bundle / MANIFEST).read_bytes()
        )

    def _upload(self, bundle: Path, manifest: Manifest, progress: Callable[[str], None]) -> None:
        there = self._current_files()

        def one(item: tuple[str, FileEntry]) -> None:
            rel, entry = item
            target = self._path(manifest.bundle_id, rel)
            if (entry.sha256, entry.bytes) in there:  # unchanged: copied inside the store
                self.fs.copy(there[entry.sha256, entry.bytes], target)
            else:
                self.fs.put_file(str(bundle / rel), target)
            progress(rel)

        with ThreadPoolExecutor(TRANSFERS) as pool:
            list(pool.map(one, sorted(manifest.files.items())))
        for name in (SIGNATURE, MANIFEST):  # the manifest last: it makes the version whole
            if (bundle / name).is_file():
                self.fs.put_file(str(bundle / name), self._path(manifest.bundle_id, name))

    def _current_files(self) -> dict[tuple[str, int], str]:
        """(sha256, bytes) -> object path of the version ``current`` names; empty if none."""
        try:
            bundle_id = self.current()
            raw = self.fs.cat_file(self._path(bundle_id, MANIFEST))
            manifest = Manifest.model_validate_json(raw)
        except Exception:  # no current, or none readable: everything is uploaded
            return {}
        return {
            (entry.sha256, entry.bytes): self._path(bundle_id, rel)
            for rel, entry in manifest.files.items()
        }


@contextmanager
def storage_errors(where: str) -> Iterator[None]:
    """Whatever the store's client raises (botocore's own errors are not ``OSError``s) as a
    ``StorageError`` of one line naming the object."""
    try:
        yield
    except BundleError:
        raise
    except FileNotFoundError:
        raise StorageError(f"{where}: no such object") from None
    except Exception as exc:
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise StorageError(f"{where}: {first}") from None


@contextmanager
def staging(bundles_dir: Path, bundle_id: str) -> Iterator[Path]:
    """A temporary folder beside the versions, removed unless it was renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle_id}.pull-", dir=bundles_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def place(tmp: Path, final: Path) -> None:
    """Rename a checked version into place. Another pull (an init container beside the
    service) may have placed it first: theirs is kept. A power loss before the data reached
    the disk leaves files that the service's load refuses (it hashes every file again)."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise


def local_copies(bundles_dir: Path) -> dict[str, Path]:
    """sha256 -> file of every version already in ``bundles_dir``, as its manifest lists it
    (placed versions only: each checked out when it was pulled, and sealed)."""
    copies: dict[str, Path] = {}
    for version in versions(bundles_dir):
        try:
            manifest = Manifest.model_validate_json((version / MANIFEST).read_bytes())
        except (OSError, ValueError):
            continue
        copies.update({e.sha256: version / rel for rel, e in manifest.files.items()})
    return copies


def versions(bundles_dir: Path) -> list[Path]:
    return [
        p
        for p in bundles_dir.iterdir()
        if p.is_dir() and not p.is_symlink() and BUNDLE_ID.match(p.name)
    ]


def prune(bundles_dir: Path, keep: int, spare: Collection[Path] = ()) -> list[str]:
    """Remove pulled versions beyond the ``keep`` newest, never ``current`` nor those in
    ``spare`` (the service spares the version it serves: the local ``current`` names a
    version refused at load until a good one comes); returns their ids. This runs only in a
    pull's folder, never over an export's."""
    kept = {(bundles_dir / CURRENT).resolve(), *(Path(p).resolve() for p in spare)}
    old = sorted(versions(bundles_dir), key=lambda p: p.stat().st_mtime, reverse=True)[keep:]
    removed = []
    for version in old:
        if version.resolve() not in kept:
            shutil.rmtree(version, ignore_errors=True)
            removed.append(version.name)
    return removed


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free
