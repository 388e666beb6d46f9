"""`walrus bundle publish` / `walrus bundle pull` and `walrus export --publish` as operators run
them, against a real S3-compatible server (moto's): exit 0 and the bundle in place, or exit 2
with one line saying what to fix and the local folder as it was."""

from __future__ import annotations

import pytest

from export.format import CURRENT, read_manifest, resolve_bundle
from export.remote import BundleStore
from tests.support.tools import walrus

pytestmark = pytest.mark.slow


def said(run) -> str:
    return " ".join((run.stdout + run.stderr).split())


def one_error_line(run) -> str:
    assert run.returncode == 2, run.stdout + run.stderr
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_publish_then_pull_with_the_command_line(tiny_bundle, s3_prefix, tmp_path):
    run = walrus("bundle", "publish", str(tiny_bundle.parent), s3_prefix)
    assert run.returncode == 0, run.stderr
    bundle_id = read_manifest(tiny_bundle).bundle_id
    assert f"published bundle {bundle_id} to {s3_prefix}" in said(run)

    out = tmp_path / "pulled"
    run = walrus("bundle", "pull", s3_prefix, str(out), "--keep", "2")
    assert run.returncode == 0, run.stderr
    assert resolve_bundle(out).name == bundle_id and read_manifest(out).bundle_id == bundle_id


def test_what_an_operator_gets_wrong_is_one_line(tiny_bundle, s3_prefix, tmp_path):
    out = tmp_path / "pulled"
    line = one_error_line(walrus("bundle", "pull", str(tmp_path), str(out)))
    assert "not an object-storage URL" in line
    line = one_error_line(walrus("bundle", "pull", s3_prefix, str(out)))
    assert f"{s3_prefix}/{CURRENT}: no such object" in line
    line = one_error_line(walrus("bundle", "publish", str(tmp_path), s3_prefix))
    assert "no manifest.json" in line

    store = BundleStore(s3_prefix)
    bundle_id = store.publish(tiny_bundle)
    victim = f"{store.root}/{bundle_id}/items.json"
    store.fs.pipe_file(victim, store.fs.cat_file(victim).replace(b"a", b"b", 1))
    line = one_error_line(walrus("bundle", "pull", s3_prefix, str(out)))
    assert f"{bundle_id}/items.json differs from its manifest (sha256)" in line
    assert [p.name for p in out.iterdir()] == []  # nothing half-written, no current


def test_export_publishes_what_it_built(tiny_pipeline_config, tiny_trained, s3_prefix, tmp_path):
    # Its own bundles folder: the shared tiny bundle's current must not move under other tests.
    own = ["--set", f"export.bundles_dir={tmp_path / 'bundles'}"]
    run = walrus("export", "-c", str(tiny_pipeline_config), *own, "--publish", s3_prefix)
    assert run.returncode == 0, run.stderr
    assert f"published bundle {BundleStore(s3_prefix).current()}" in said(run)
    line = one_error_line(
        walrus("export", "-c", str(tiny_pipeline_config), *own, "--publish", str(tmp_path))
    )
    assert "not an object-storage URL" in line
