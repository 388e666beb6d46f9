"""Bundles in object storage (``export.remote``), against a real S3-compatible server (moto's,
``tests/s3_server.py``): publish and pull give back the bundle file for file; a torn upload
never becomes current; a tampered object, manifest or signature is refused with the local
``current`` untouched and nothing half-written left; unchanged files travel once."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from export.format import CURRENT, MANIFEST, Files, read_manifest, resolve_bundle
from export.remote import BundleStore, StorageError, prune
from export.signing import SignatureError, generate_keypair, sign_bundle
from export.update import CatalogChange, update_bundle
from tests.support.bundles import bundles_of


def s3(prefix: str) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3", skip_instance_cache=True)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def files_of(bundle: Path) -> dict[str, bytes]:
    return {
        p.relative_to(bundle).as_posix(): p.read_bytes() for p in bundle.rglob("*") if p.is_file()
    }


@pytest.fixture
def second_version(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A bundles folder whose current is an update of the tiny bundle (one item withdrawn):
    most of its files are the tiny bundle's."""
    root = bundles_of(tiny_bundle, tmp_path)
    first = json.loads((tiny_bundle / Files.ITEM_IDS).read_text())[0]
    update_bundle(root, CatalogChange([], [first]), compact_after=100)
    return root


def test_publish_then_pull_gives_back_the_bundle_file_for_file(tiny_bundle, s3_prefix, tmp_path):
    store = BundleStore(s3_prefix)
    bundle_id = store.publish(tiny_bundle)
    assert bundle_id == read_manifest(tiny_bundle).bundle_id
    assert store.current() == bundle_id
    assert s3(s3_prefix).cat_file(f"{s3_prefix}/{CURRENT}") == f"{bundle_id}\n".encode()

    local = tmp_path / "pulled"
    path = store.pull(local)
    assert path == local / bundle_id and resolve_bundle(local) == path.resolve()
    assert files_of(path) == files_of(tiny_bundle)
    assert read_manifest(local).bundle_id == bundle_id  # every hash checks, as the service's load
    assert leftovers(local) == []
    # Pulled again: already there, only switched to; nothing downloaded or left behind.
    assert store.pull(local) == path and sorted(p.name for p in local.iterdir()) == sorted(
        [CURRENT, bundle_id]
    )


def test_a_torn_upload_never_becomes_current(
    tiny_bundle, second_version, s3_prefix, tmp_path, monkeypatch
):
    store = BundleStore(s3_prefix)
    first = store.publish(tiny_bundle)
    newer = resolve_bundle(second_version)
    real_put = store.fs.put_file
    calls = []

    def dies_on_the_second(local, remote, **kwargs):
        calls.append(remote)
        if len(calls) > 1:
            raise ConnectionResetError("the uploader's connection dropped")
        return real_put(local, remote, **kwargs)

    monkeypatch.setattr(store.fs, "put_file", dies_on_the_second)
    with pytest.raises(StorageError, match="ConnectionResetError"):
        store.publish(newer)
    store.fs.invalidate_cache()
    assert store.fs.ls(f"{store.root}/{newer.name}")  # died part way, some objects up
    assert store.current() == first
    local = tmp_path / "pulled"
    assert store.pull(local).name == first

    # Pointed at by hand: the torn version has no manifest (written last), so it is refused.
    store.fs.pipe_file(f"{store.root}/{CURRENT}", newer.name.encode())
    with pytest.raises(StorageError, match=rf"{newer.name}/{MANIFEST}: no such object"):
        store.pull(local)
    assert resolve_bundle(local).name == first and leftovers(local) == []


def test_a_tampered_object_is_refused_and_the_local_current_stays(
    tiny_bundle, second_version, s3_prefix, tmp_path
):
    store = BundleStore(s3_prefix)
    first = store.publish(tiny_bundle)
    local = tmp_path / "pulled"
    store.pull(local)
    second = store.publish(second_version)
    # A file the first version lacks (the others are hard-linked from it, never read from the
    # store); same size, other bytes: only the hash can tell.
    target = f"{store.root}/{second}/{Files.WITHDRAWN}"
    data = bytearray(store.fs.cat_file(target))
    data[-1] ^= 0xFF
    store.fs.pipe_file(target, bytes(data))
    with pytest.raises(
        StorageError, match=rf"{second}/{Files.WITHDRAWN} differs from its manifest \(sha256\)"
    ):
        store.pull(local)
    assert resolve_bundle(local).name == first
    assert sorted(p.name for p in local.iterdir()) == sorted([CURRENT, first])  # no half version

    store.fs.pipe_file(target, bytes(data) + b"more")  # longer: stops at the listed size
    with pytest.raises(StorageError, match=r"differs from its manifest \(size\)"):
        store.pull(local)


def test_a_tampered_manifest_is_refused_by_its_signature_before_any_data(
    tiny_bundle, s3_prefix, tmp_path
):
    keys = tmp_path / "keys"
    private, public = generate_keypair(keys)
    bundle = bundles_of(tiny_bundle, tmp_path) / tiny_bundle.name
    sign_bundle(bundle, private)
    store = BundleStore(s3_prefix)
    bundle_id = store.publish(bundle)
    assert store.pull(tmp_path / "good", trusted_keys=public).name == bundle_id

    manifest = json.loads(store.fs.cat_file(f"{store.root}/{bundle_id}/{MANIFEST}"))
    manifest["candidates"]["n_wals"] += 1  # a consistent but unsigned change
    store.fs.pipe_file(f"{store.root}/{bundle_id}/{MANIFEST}", json.dumps(manifest).encode())
    downloads = []
    store._download = lambda *args: downloads.append(args)  # type: ignore[method-assign]
    with pytest.raises(SignatureError, match="verifies with none"):
        store.pull(tmp_path / "bad", trusted_keys=public)
    assert downloads == [] and not (tmp_path / "bad" / CURRENT).exists()


def test_unchanged_files_travel_once_and_a_rollback_only_moves_current(
    tiny_bundle, second_version, s3_prefix, tmp_path, monkeypatch
):
    store = BundleStore(s3_prefix)
    first = store.publish(tiny_bundle)
    local = tmp_path / "pulled"
    store.pull(local)
    newer = resolve_bundle(second_version)
    changed = {
        rel
        for rel, entry in read_manifest(newer).files.items()
        if read_manifest(tiny_bundle).files.get(rel) != entry
    }
    assert 0 < len(changed) < len(read_manifest(newer).files) / 2

    uploaded: list[str] = []
    real_put = store.fs.put_file
    monkeypatch.setattr(
        store.fs, "put_file", lambda lp, rp, **kw: (uploaded.append(rp), real_put(lp, rp, **kw))
    )
    second = store.publish(newer)
    assert {rp.split(f"{second}/", 1)[1] for rp in uploaded} == changed | {MANIFEST}

    path = store.pull(local)
    assert files_of(path) == files_of(newer)
    # Unchanged files (by sha256): hard links to the first version's, not downloads.
    first_inodes = {p.stat().st_ino for p in (local / first).rglob("*") if p.is_file()}
    for rel in read_manifest(path).files:
        assert ((path / rel).stat().st_ino in first_inodes) == (rel not in changed), rel

    uploaded.clear()
    assert store.publish(tiny_bundle) == first and uploaded == []  # held already: a rollback
    assert store.current() == first and store.pull(local).name == first


def test_current_naming_no_bundle_or_an_unreachable_store_is_one_line(s3_prefix, tmp_path):
    store = BundleStore(s3_prefix)
    with pytest.raises(StorageError, match=r"/current: no such object"):
        store.current()
    store.fs.pipe_file(f"{store.root}/{CURRENT}", b"../../etc\n")
    with pytest.raises(StorageError, match="not a bundle id"):
        store.pull(tmp_path / "x")
    with pytest.raises(StorageError, match="Protocol not known: nosuchscheme"):
        BundleStore("nosuchscheme://bucket/bundles")
    with pytest.raises(StorageError, match="install gcsfs"):  # gs:// needs its fsspec package
        BundleStore("gs://bucket/bundles")


def test_a_store_that_does_not_answer_is_one_line(s3_prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard: nothing listens
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError, match=r"bundles/current: EndpointConnectionError"):
        BundleStore("s3://bucket/bundles").pull(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_prune_keeps_the_newest_and_never_current(tiny_bundle, second_version, s3_prefix, tmp_path):
    store = BundleStore(s3_prefix)
    first = store.publish(tiny_bundle)
    second = store.publish(second_version)
    local = tmp_path / "pulled"
    store.pull(local, first)
    store.pull(local, second, keep=1)
    assert sorted(p.name for p in local.iterdir()) == sorted([CURRENT, second])
    store.pull(local, first)  # a rollback pins the older one again
    assert prune(local, keep=0) == [second] and resolve_bundle(local).name == first
    store.pull(local, second)  # refused at load, say: current, but the first still serves
    assert prune(local, keep=0, spare=[local / first]) == []
    assert sorted(p.name for p in local.iterdir()) == sorted([CURRENT, first, second])


def test_a_pull_that_would_not_fit_stops_before_any_data(
    tiny_bundle, s3_prefix, tmp_path, monkeypatch
):
    store = BundleStore(s3_prefix)
    bundle_id = store.publish(tiny_bundle)
    needed = sum(e.bytes for e in read_manifest(resolve_bundle(tiny_bundle)).files.values())
    monkeypatch.setattr("export.remote.free_bytes", lambda _folder: needed - 1)
    local = tmp_path / "pulled"
    with pytest.raises(StorageError, match=rf"{bundle_id}: needs [\d.]+ GB, [\d.]+ GB free"):
        store.pull(local)
    assert list(local.iterdir()) == []  # no version, no current, no staging folder
    monkeypatch.setattr("export.remote.free_bytes", lambda _folder: needed)
    assert store.pull(local).name == bundle_id
