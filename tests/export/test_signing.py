"""Signed bundles: Ed25519 over manifest.json, checked before anything else is believed."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from export.format import BundleError, read_manifest, writable_copy
from export.signing import (
    SignatureError,
    check_signature,
    generate_keypair,
    load_public_keys,
    sign_bundle,
)


@pytest.fixture
def signed(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    writable_copy(tiny_bundle, copy)
    private, public = generate_keypair(tmp_path / "keys")
    sign_bundle(copy, private)
    return copy, private, public


def test_a_signed_bundle_verifies_with_its_key_only(signed, tmp_path):
    bundle, private, public = signed
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert len(check_signature(bundle, load_public_keys(public))) == 16
    _, other = generate_keypair(tmp_path / "other")
    with pytest.raises(SignatureError, match="none of the 1 trusted key"):
        check_signature(bundle, load_public_keys(other))
    # A folder of keys: any one of them may have signed.
    both = load_public_keys(public.parent) + load_public_keys(other)
    check_signature(bundle, both)
    read_manifest(bundle)  # the signature file is not an unlisted file


def test_a_changed_manifest_or_a_missing_signature_is_refused(signed):
    bundle, _, public = signed
    keys = load_public_keys(public)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["candidates"]["n_wals"] += 1  # one value changed, the file list untouched
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="tampered"):
        check_signature(bundle, keys)
    (bundle / "manifest.sig").unlink()
    with pytest.raises(SignatureError, match="unsigned"):
        check_signature(bundle, keys)
    assert issubclass(SignatureError, BundleError)


def test_keygen_never_overwrites_and_bad_keys_are_named(tmp_path):
    generate_keypair(tmp_path)
    with pytest.raises(SignatureError, match="exists"):
        generate_keypair(tmp_path)
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    with pytest.raises(SignatureError, match=r"bad\.pub: not a readable PEM public key"):
        load_public_keys(bad)


def test_a_file_the_manifest_does_not_list_is_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    writable_copy(tiny_bundle, copy)
    (copy / "encoder.onnx.data").write_bytes(b"external data nobody hashed")
    with pytest.raises(BundleError, match=r"encoder\.onnx\.data is in the bundle but not in"):
        read_manifest(copy)


def test_the_cli_makes_keys_signs_and_verifies(tiny_bundle, tmp_path):
    def walrus(*args):
        return subprocess.run(
            [sys.executable, "-m", "walrus.cli", *args], capture_output=True, text=True, timeout=300
        )

    copy = tmp_path / "bundle"
    writable_copy(tiny_bundle, copy)
    keys = tmp_path / "keys"
    assert walrus("bundle", "keygen", "--out", str(keys)).returncode == 0
    pub = keys / "walrus-signing.pub"
    unsigned = walrus("export", "--verify", str(copy), "--trusted-keys", str(pub))
    assert unsigned.returncode == 2 and "unsigned" in unsigned.stderr
    assert "Traceback" not in unsigned.stderr
    sign = walrus("bundle", "sign", str(copy), "--key", str(keys / "walrus-signing.key"))
    assert sign.returncode == 0, sign.stderr
    ok = walrus("export", "--verify", str(copy), "--trusted-keys", str(pub))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["signed_by"] == check_signature(copy, load_public_keys(pub))


def test_export_signs_inside_the_temporary_folder(tiny_pipeline_config, tiny_trained, tmp_path):
    """`walrus export --sign`: the published bundle carries its signature from the start."""
    from export.bundle import build_bundle
    from models.config import load_config

    private, public = generate_keypair(tmp_path / "keys")
    out = tmp_path / "bundles"
    cfg = load_config(tiny_pipeline_config, [f"export.bundles_dir={out}"])
    path = build_bundle(cfg, tiny_trained, out, sign_with=private)
    check_signature(path, load_public_keys(public))
    assert "manifest.sig" not in read_manifest(path).files


def test_the_service_refuses_unsigned_and_tampered_bundles(tiny_bundle, tmp_path):
    """WALRUS_TRUSTED_KEYS: a signed bundle serves; an unsigned one and one whose manifest
    changed after signing are refused at reload, the reason in /readyz and /metrics, while
    the signed one serves on."""
    import httpx

    from export.format import switch_current
    from tests.support.servers import Server

    private, public = generate_keypair(tmp_path / "keys")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    for name in ("good", "unsigned", "tampered"):
        writable_copy(tiny_bundle, bundles / name)
    sign_bundle(bundles / "good", private)
    sign_bundle(bundles / "tampered", private)
    manifest = json.loads((bundles / "tampered/manifest.json").read_text())
    manifest["candidates"]["n_text"] = 1
    (bundles / "tampered/manifest.json").write_text(json.dumps(manifest))
    switch_current(bundles, "good")
    token = "t" * 32
    with Server(
        bundles,
        WALRUS_TRUSTED_KEYS=str(public),
        WALRUS_FRONT__ADMIN_TOKEN=token,
        WALRUS_ENGINE__RELOAD_INTERVAL_S="0",
    ) as srv:
        srv.wait()
        auth = {"Authorization": f"Bearer {token}"}
        for name, reason in (("unsigned", "unsigned"), ("tampered", "verifies with none")):
            switch_current(bundles, name)
            answer = httpx.post(f"{srv.url}/admin/reload", headers=auth, timeout=60).json()
            assert not answer["reloaded"] and reason in answer["reason"], answer
        ready = httpx.get(f"{srv.url}/readyz").json()
        assert ready["ready"] and len(ready["refused"]) == 2
        r = httpx.post(f"{srv.url}/v1/recommend", json={"query": "space", "k": 2})
        assert r.status_code == 200
        assert (
            'walrus_bundle_loads_total{result="refused"} 2.0'
            in httpx.get(f"{srv.url}/metrics").text
        )
