"""`walrus export` (a bundle from `walrus train hybrid`, or --verify one) and
`walrus bundle` (bundles made without the training pipeline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from export.remote import BundleStore, is_remote
from models.core.errors import WalrusError
from walrus.cli.common import SetOption, console, user_errors, with_progress

app = typer.Typer(help="Bundles made without the training pipeline.", no_args_is_help=True)


@app.command("synthetic")
@user_errors
def bundle_synthetic(
    out: Annotated[Path, typer.Option(help="Bundles directory; the new bundle becomes current.")],
    users: Annotated[int, typer.Option(min=1, help="Users (the seed: 10,000,000).")] = 10_000_000,
    items: Annotated[int, typer.Option(min=2, help="Items (the seed: 500,000).")] = 500_000,
    dim: Annotated[int, typer.Option(min=1, max=4096, help="WALS dimension.")] = 64,
    seen_per_user: Annotated[int, typer.Option(min=1, help="Mean seen items per user.")] = 10,
    titles: Annotated[int, typer.Option(min=1, help="Distinct item titles.")] = 50_000,
    head_examples: Annotated[int, typer.Option(min=10)] = 4_000,
    encoder: Annotated[str, typer.Option(help="Encoder package or path.")] = "",
    seed: int = 0,
) -> None:
    """A seed-scale bundle (clustered WALS factors, real titles and encoder, a trained head)
    for load tests: `walrus bundle synthetic --out artifacts/seed/bundles`."""
    from export.synthetic import SeedSpec, build_synthetic_bundle
    from models.config import EncoderConfig

    if head_examples > users:
        raise WalrusError(f"--head-examples {head_examples} > --users {users}: lower it")
    spec = SeedSpec(users, items, dim, seen_per_user, min(titles, items), head_examples, seed)
    path = with_progress(
        "seed bundle",
        lambda say: build_synthetic_bundle(spec, out, encoder or EncoderConfig().name, say),
    )
    manifest = json.loads((path / "manifest.json").read_text())
    indexes = ", ".join(
        f"{name} {e['factory']} {e['search_params']} recall@100 {e['recall_at_100']:.3f} "
        f"{e['speedup_over_flat']:.1f}x flat"
        for name, e in manifest["indexes"].items()
    )
    console.print(f"bundle {manifest['bundle_id']} -> {path} (current); {indexes}")


@user_errors
def export(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Pipeline TOML config.")
    ] = None,
    set_: SetOption = None,
    verify: Annotated[
        Path | None, typer.Option(help="Re-check a bundle's checksums and parity instead.")
    ] = None,
    sign: Annotated[
        Path | None,
        typer.Option(help="Sign the new bundle with this Ed25519 private key (PEM)."),
    ] = None,
    trusted_keys: Annotated[
        Path | None,
        typer.Option(help="With --verify: the signature must verify with this key or folder."),
    ] = None,
    publish: Annotated[
        str | None,
        typer.Option(
            help="Then upload the new bundle to this object-storage prefix (s3://bucket/prefix) "
            "and point its current at it."
        ),
    ] = None,
) -> None:
    """Build a bundle (FAISS, ONNX, manifest) from `walrus train hybrid`, or --verify one."""
    if verify is not None:
        verify_and_report(verify, trusted_keys)
        return
    if config is None:
        raise WalrusError("give --config to build a bundle, or --verify BUNDLE to check one")
    store = open_store(publish) if publish else None  # a bad URL fails before the build
    from export.bundle import build_bundle
    from models.config import load_config
    from models.trained import TrainedArtifacts

    cfg = load_config(config, set_)
    trained = TrainedArtifacts.load(cfg.output_dir / "hybrid")
    path = with_progress(
        "export", lambda say: build_bundle(cfg, trained, cfg.bundles_dir, say, sign)
    )
    manifest = json.loads((path / "manifest.json").read_text())
    console.print(
        f"bundle {manifest['bundle_id']} -> {path} (current); "
        f"recall@100 wals {manifest['indexes']['wals']['recall_at_100']:.3f} "
        f"text {manifest['indexes']['text']['recall_at_100']:.3f}; "
        f"encoder fp32 diff {manifest['parity']['encoder_fp32_max_abs_diff']:.1e}, "
        f"int8 cosine {manifest['parity']['encoder_int8_min_cosine']}"
    )
    if store is not None:
        publish_to(store, path)


def verify_and_report(bundle: Path, trusted_keys: Path | None) -> None:
    from export.runtime import verify_bundle

    report = verify_bundle(bundle, trusted_keys)
    print(json.dumps(report, indent=2))
    unchecked = report["parity"]["not_checked"]
    console.print(
        f"bundle {report['bundle_id']}: {report['files']} files and parity OK"
        + (f"; not checked: {', '.join(unchecked)}" if unchecked else "")
    )


StoreURL = Annotated[str, typer.Argument(help="Object-storage prefix, e.g. s3://bucket/walrus.")]


def open_store(url: str) -> BundleStore:
    if not is_remote(url):
        raise WalrusError(f"{url}: not an object-storage URL; give one like s3://bucket/prefix")
    return BundleStore(url)


def publish_to(store: BundleStore, bundle: Path) -> None:
    bundle_id = with_progress("upload", lambda say: store.publish(bundle, say))
    console.print(f"published bundle {bundle_id} to {store.url} (its current)")


@app.command("publish")
@user_errors
def bundle_publish(
    bundle: Annotated[Path, typer.Argument(help="A bundle, or a bundles folder (its current).")],
    url: StoreURL,
) -> None:
    """Upload a bundle (every file checked first; files the store's current version holds
    are copied there, not uploaded), then point the store's current at it. Publishing a
    version the store holds already only moves current: a rollback."""
    publish_to(open_store(url), bundle)


@app.command("pull")
@user_errors
def bundle_pull(
    url: StoreURL,
    out: Annotated[Path, typer.Argument(help="Local bundles folder; its current is switched.")],
    bundle_id: Annotated[
        str | None, typer.Option(help="This version instead of the store's current.")
    ] = None,
    trusted_keys: Annotated[
        Path | None,
        typer.Option(
            envvar="WALRUS_TRUSTED_KEYS",
            help="The manifest's signature must verify with this key or folder of *.pub.",
        ),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option(min=1, help="Then remove all but the newest this many versions in OUT."),
    ] = None,
) -> None:
    """Download the store's current bundle into OUT: the manifest (and its signature) checked
    first, every file's size and sha256 as it arrives, files OUT holds already hard-linked;
    OUT's current moves only when all is well."""
    store = open_store(url)
    path = with_progress("pull", lambda say: store.pull(out, bundle_id, trusted_keys, keep, say))
    console.print(f"bundle {path.name} -> {path} (current)")


@app.command("keygen")
@user_errors
def bundle_keygen(
    out: Annotated[Path, typer.Option(help="Folder for NAME.key (private) and NAME.pub.")],
    name: Annotated[str, typer.Option(help="File name stem.")] = "walrus-signing",
) -> None:
    """An Ed25519 key pair for signed bundles: keep NAME.key where exports run, give the
    service NAME.pub (WALRUS_TRUSTED_KEYS)."""
    from export.signing import generate_keypair

    private, public = generate_keypair(out, name)
    console.print(f"wrote {private} (private, mode 0600) and {public}")


@app.command("sign")
@user_errors
def bundle_sign(
    bundle: Annotated[Path, typer.Argument(help="A bundle, or a bundles folder (its current).")],
    key: Annotated[Path, typer.Option(help="Ed25519 private key (PEM) from `keygen`.")],
) -> None:
    """Sign a bundle made elsewhere (`walrus bundle synthetic`, an older export): writes
    its manifest.sig after checking every file against the manifest."""
    from export.format import read_manifest, resolve_bundle
    from export.signing import sign_bundle

    path = resolve_bundle(bundle)
    read_manifest(path)  # never vouch for a bundle that does not check out
    console.print(f"signed {path} with key {sign_bundle(path, key)}")


@app.command("update")
@user_errors
def bundle_update(
    bundles: Annotated[Path, typer.Option(help="Bundles folder: its current is updated.")],
    add: Annotated[
        Path | None, typer.Option(help="CSV of new items: item_id and the catalog's columns.")
    ] = None,
    remove: Annotated[
        Path | None, typer.Option(help="Text file of item ids to withdraw, one per line.")
    ] = None,
    sign: Annotated[
        Path | None, typer.Option(help="Sign the new version with this Ed25519 private key.")
    ] = None,
    compact_after: Annotated[
        int, typer.Option(min=1, help="Compact as well once this many updates piled up.")
    ] = 10,
) -> None:
    """A new bundle version with items added and withdrawn, in seconds: no training, no
    torch (the serving image runs it). It becomes current; the service reloads it."""
    from export.update import read_change, update_bundle

    change = read_change(add, remove)
    path = with_progress(
        "update", lambda say: update_bundle(bundles, change, sign, compact_after, say)
    )
    report(path, f"+{len(change.added)} items, -{len(change.withdrawn)} withdrawn")


@app.command("compact")
@user_errors
def bundle_compact(
    bundles: Annotated[Path, typer.Option(help="Bundles folder: its current is compacted.")],
    sign: Annotated[
        Path | None, typer.Option(help="Sign the new version with this Ed25519 private key.")
    ] = None,
) -> None:
    """A new version of the current bundle without its withdrawn items, its indexes rebuilt
    (their recall measured again); it becomes current."""
    from export.update import compact_bundle

    path = with_progress("compact", lambda say: compact_bundle(bundles, sign, say))
    report(path, "compacted")


def report(path: Path, what: str) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    lineage = manifest.get("lineage") or {}
    console.print(
        f"bundle {manifest['bundle_id']} -> {path} (current): {what}; "
        f"{manifest['counts']['items']} items, {lineage.get('withdrawn', 0)} withdrawn, "
        f"{lineage.get('updates', 0)} update(s) since the last full build"
    )
