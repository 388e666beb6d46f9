"""The export bundle: contents, checksums, parity, atomic pointer, failure leaves nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from export.bundle import build_bundle
from export.format import FORMAT_VERSION, BundleError, read_manifest, resolve_bundle, writable_copy
from export.runtime import ParityError, verify_bundle

EXPECTED = {
    "manifest.json",
    "user_ids.json",
    "item_ids.json",
    "items.json",
    "user_factors.npy",
    "item_factors.npy",
    "wals_item_factors.npy",
    "item_gramian.npy",
    "col_weights.npy",
    "seen_indptr.npy",
    "seen_indices.npy",
    "item_text_embeddings.npy",
    "item_log_popularity.npy",
    "wals.faiss",
    "text.faiss",
    "encoder.onnx",
    "encoder.int8.onnx",
    "head.onnx",
    "tokenizer.json",
    "tokenizer_config.json",
}


def test_bundle_contents_and_manifest(tiny_bundle):
    names = {p.name for p in tiny_bundle.iterdir()}
    assert names >= EXPECTED
    manifest = read_manifest(tiny_bundle).model_dump()
    assert manifest["format_version"] == FORMAT_VERSION
    assert set(manifest["files"]) >= EXPECTED - {"manifest.json"}
    assert manifest["dims"]["wals"] == 8 and manifest["encoder"]["name"] == "tiny-roberta"
    assert manifest["indexes"]["wals"]["recall_at_100"] == pytest.approx(1.0)
    parity = manifest["parity"]
    assert parity["encoder_fp32_max_abs_diff"] <= 1e-4
    assert parity["encoder_int8_min_cosine"] >= 0.99
    assert parity["head_max_abs_diff"] <= 1e-4
    assert {"torch", "onnxruntime", "numpy"} <= set(manifest["packages"])
    factors = np.load(tiny_bundle / "user_factors.npy", mmap_mode="r")
    assert isinstance(factors, np.memmap)
    for path in tiny_bundle.rglob("*.npy"):
        np.load(path, allow_pickle=False)


def test_current_pointer_resolves(tiny_bundle):
    current = tiny_bundle.parent / "current"
    assert current.is_symlink() and resolve_bundle(tiny_bundle.parent) == tiny_bundle.resolve()


def test_onnx_encoder_matches_torch_on_new_texts(tiny_bundle, tiny_trained):
    """Parity on texts the export never saw, through the service's runtime classes."""
    from export.runtime import OnnxTextEncoder

    texts = ["completely new words here", "x", "another unseen sentence " * 20]
    cfg = json.loads((tiny_bundle / "tokenizer_config.json").read_text())
    onnx = OnnxTextEncoder(
        tiny_bundle / "encoder.onnx", tiny_bundle / "tokenizer.json", cfg["max_length"]
    )
    np.testing.assert_allclose(onnx.encode(texts), tiny_trained.encoder.encode(texts), atol=1e-4)


def test_verify_passes_then_catches_corruption(tiny_bundle, tmp_path):
    report = verify_bundle(tiny_bundle)
    assert report["parity"]["encoder_fp32_max_abs_diff"] <= 1e-4
    copy = tmp_path / "copy"
    writable_copy(tiny_bundle, copy)
    with open(copy / "item_factors.npy", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")
    with pytest.raises(BundleError, match=r"item_factors\.npy is corrupt"):
        verify_bundle(copy)
    (copy / "item_factors.npy").unlink()
    with pytest.raises(BundleError, match=r"item_factors\.npy is missing"):
        read_manifest(copy)


def drifted_copy(bundle, copy, change_manifest):
    """A copy whose PyTorch reference outputs moved by 1e-2, checksums kept valid."""
    from export.format import sha256_file

    writable_copy(bundle, copy)
    ref = np.load(copy / "parity" / "encoder_reference.npy")
    np.save(copy / "parity" / "encoder_reference.npy", ref + 1e-2)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["parity/encoder_reference.npy"]["sha256"] = sha256_file(
        copy / "parity" / "encoder_reference.npy"
    )
    change_manifest(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_verify_catches_parity_drift(tiny_bundle, tmp_path):
    """Reference outputs that no longer match the ONNX model fail the parity check."""
    copy = drifted_copy(tiny_bundle, tmp_path / "drift", lambda manifest: None)
    with pytest.raises(ParityError, match="encoder fp32 max abs diff"):
        verify_bundle(copy)


def test_other_format_version_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "old"
    writable_copy(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"format version 999.*walrus export -c CONFIG"):
        read_manifest(copy)


@pytest.mark.parametrize("name", ["item_factors.npy", "cold_items.npy", "text.faiss"])
def test_a_manifest_that_leaves_out_a_file_the_service_loads_is_refused(
    tiny_bundle, tmp_path, name
):
    copy = tmp_path / "unlisted"
    writable_copy(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"][name]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"does not list {name}"):
        read_manifest(copy)


def test_a_manifest_with_a_wrong_field_is_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "typed"
    writable_copy(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["indexes"]["wals"]["factory"] = 7
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"indexes\.wals\.factory"):
        read_manifest(copy)


def test_verify_holds_the_bundle_to_walrus_tolerances_not_the_manifests(tiny_bundle, tmp_path):
    """A manifest cannot vouch for itself: raising its recorded tolerance changes nothing."""
    copy = drifted_copy(
        tiny_bundle, tmp_path / "lenient", lambda m: m["parity"].update(fp32_tolerance=1.0)
    )
    with pytest.raises(ParityError, match="encoder fp32 max abs diff"):
        verify_bundle(copy)


def test_failed_export_leaves_nothing_and_keeps_current(
    tiny_pipeline_config, tiny_trained, tiny_bundle, tmp_path
):
    from models.config import load_config

    cfg = load_config(
        tiny_pipeline_config, ["export.fp32_tolerance=1e-12", f"export.bundles_dir={tmp_path}"]
    )
    first = build_bundle(
        load_config(tiny_pipeline_config, [f"export.bundles_dir={tmp_path}"]),
        tiny_trained,
        tmp_path,
    )
    with pytest.raises(ParityError, match="parity failed"):
        build_bundle(cfg, tiny_trained, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, "current"])
    assert resolve_bundle(tmp_path) == first.resolve()


def test_export_cli_verify_and_errors(tiny_bundle, tmp_path):
    def walrus(*args):
        return subprocess.run(
            [sys.executable, "-m", "walrus.cli", *args], capture_output=True, text=True, timeout=300
        )

    ok = walrus("export", "--verify", str(tiny_bundle.parent))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["bundle_id"] == tiny_bundle.name
    assert json.loads(ok.stdout)["parity"]["not_checked"] == []
    copy = tmp_path / "no-fp16"
    writable_copy(tiny_bundle, copy)
    (copy / "encoder.fp16.onnx").unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["encoder.fp16.onnx"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    partial = walrus("export", "--verify", str(copy))
    assert partial.returncode == 0, partial.stderr
    assert json.loads(partial.stdout)["parity"]["not_checked"] == [
        "encoder.fp16.onnx (not in the bundle)"
    ]
    assert "not checked:" in partial.stderr and "encoder.fp16.onnx" in partial.stderr
    bad = walrus("export", "--verify", str(tmp_path))
    assert (
        bad.returncode == 2 and "no manifest.json" in bad.stderr and "Traceback" not in bad.stderr
    )
    none = walrus("export")
    assert none.returncode == 2 and "--config" in none.stderr


def test_the_gpu_encoder_is_fp16_and_checked(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert "encoder.fp16.onnx" in manifest["files"]
    assert manifest["parity"]["encoder_fp16_min_cosine"] >= 0.999
    import onnx

    model = onnx.load(str(tiny_bundle / "encoder.fp16.onnx"))
    weights = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in weights
    # inputs and output keep their types: the service feeds int64 and reads float32
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_the_int8_schemes_find_their_nodes_in_the_exported_encoder(tiny_bundle, tiny_trained):
    from export.onnx import fp32_nodes

    layers = tiny_trained.encoder.module.model.config.num_hidden_layers
    assert len(fp32_nodes(tiny_bundle / "encoder.onnx", "ffn_down_fp32")) == layers
    assert len(fp32_nodes(tiny_bundle / "encoder.onnx", "ffn_fp32")) == 2 * layers


def test_renamed_nodes_fail_loudly_instead_of_keeping_nothing(tiny_bundle, tmp_path):
    import onnx

    from export.onnx import fp32_nodes

    model = onnx.load(str(tiny_bundle / "encoder.onnx"))
    for node in model.graph.node:
        node.name = node.name.replace("dense", "linear")
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    with pytest.raises(ParityError, match="node names changed"):
        fp32_nodes(tmp_path / "renamed.onnx", "ffn_down_fp32")


def test_the_ladder_falls_back_and_fails_when_no_scheme_passes(tiny_bundle, tmp_path):
    from export.bundle import quantize_to_target

    copy = tmp_path / "ladder"
    writable_copy(tiny_bundle, copy)
    texts = json.loads((copy / "parity" / "texts.json").read_text())
    reference = np.load(copy / "parity" / "encoder_reference.npy")
    max_length = json.loads((copy / "tokenizer_config.json").read_text())["max_length"]
    from export.runtime import OnnxTextEncoder, cosine_rows

    def cosine(scheme):
        from export.onnx import quantize_encoder

        quantize_encoder(copy / "encoder.onnx", copy / "probe.onnx", scheme)
        enc = OnnxTextEncoder(copy / "probe.onnx", copy / "tokenizer.json", max_length)
        return float(cosine_rows(enc.encode(texts), reference).min())

    first, second = cosine("ffn_down_fp32"), cosine("ffn_fp32")
    assert second >= first  # keeping more of the FFN in fp32 is never further from PyTorch
    assert quantize_to_target(copy, texts, reference, max_length, first) == "ffn_down_fp32"
    with pytest.raises(ParityError, match="with every scheme"):
        quantize_to_target(copy, texts, reference, max_length, 1.0000001)
    assert not (copy / "encoder.int8.onnx").exists()  # nothing half-written is left


@pytest.mark.parametrize("bad", ["../outside.npy", "/etc/hostname", "parity/../../x"])
def test_a_manifest_naming_files_outside_the_bundle_is_refused(tiny_bundle, tmp_path, bad):
    copy = tmp_path / "escape"
    writable_copy(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][bad] = {"sha256": "0" * 64, "bytes": 1}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside the bundle"):
        read_manifest(copy)


def test_a_link_leading_out_of_the_bundle_is_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "linked"
    writable_copy(tiny_bundle, copy)
    outside = tmp_path / "elsewhere.npy"
    shutil.move(copy / "item_factors.npy", outside)
    (copy / "item_factors.npy").symlink_to(outside)  # same bytes, same sha256
    with pytest.raises(BundleError, match=r"item_factors\.npy', outside the bundle"):
        read_manifest(copy)


def test_a_manifest_without_its_file_list_is_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "nofiles"
    writable_copy(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="files"):
        read_manifest(copy)


def test_a_current_link_to_a_missing_version_says_so(tmp_path):
    (tmp_path / "current").symlink_to("20990101T000000Z-gone")
    with pytest.raises(BundleError, match="points to 20990101T000000Z-gone, which does not exist"):
        resolve_bundle(tmp_path)


@pytest.mark.parametrize("name", ["../../outside", "/tmp/elsewhere", "extra"])
def test_an_index_the_format_does_not_name_is_refused(tiny_bundle, tmp_path, name):
    """The service opens ``<name>.faiss`` for every entry of ``indexes``: a name of its own
    choosing would load a file from outside the bundle, unhashed."""
    copy = tmp_path / "indexes"
    writable_copy(tiny_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["indexes"][name] = manifest["indexes"]["wals"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"indexes: .*wals.*text"):
        read_manifest(copy)


def test_a_published_bundle_is_read_only_and_a_later_change_is_refused(tiny_bundle, tmp_path):
    """Publishing is the last write: every file 0444 (the signature too, when signed); a file
    changed after publication anyway (root ignores the modes) fails the next load."""
    from export.runtime import LoadOptions, load_bundle

    files = [p for p in tiny_bundle.rglob("*") if p.is_file()]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o444}
    copy = writable_copy(tiny_bundle, tmp_path / "copy")
    assert (copy / "item_factors.npy").stat().st_mode & 0o200  # a variant may be changed
    load_bundle(copy, LoadOptions("cpu"))
    np.save(copy / "item_factors.npy", np.load(copy / "item_factors.npy") * 2)
    with pytest.raises(BundleError, match=r"item_factors\.npy is corrupt"):
        load_bundle(copy, LoadOptions("cpu"))
