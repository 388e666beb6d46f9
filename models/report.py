"""Reports a reader can see: Markdown tables and matplotlib PNGs for ``walrus eval`` and
``walrus tune``. Written through a temporary folder, so a report is whole or absent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from models.artifacts import atomic_directory


def results_table(results: Sequence[dict[str, Any]], ks: Sequence[int]) -> str:
    """The Markdown table of ``walrus eval`` rows (the one in docs/evaluation.md)."""
    head = "| split | model | " + " | ".join(f"R@{k} | N@{k}" for k in ks) + " | users |"
    rule = "|---|---|" + "---|---|" * len(ks) + "---|"
    rows = [
        f"| {r['split']} | {r['model']} | "
        + " | ".join(f"{r[f'recall@{k}']:.4f} | {r[f'ndcg@{k}']:.4f}" for k in ks)
        + f" | {int(r['users'])} |"
        for r in results
    ]
    return "\n".join([head, rule, *rows])


def quality_targets(results: Sequence[dict[str, Any]], k: int = 20) -> list[str]:
    """The hybrid's targets at Recall@k, each met or not, with the figures: at least 3%
    above WALS alone on ``holdout`` and ``users``, the best of the three on the query task,
    and cold items found at least twice as well as by text alone (``hybrid_cold``). A target
    whose rows were not evaluated is left out."""
    r = {(row["split"], row["model"]): row[f"recall@{k}"] for row in results}

    def line(name: str, met: bool, figures: str) -> str:
        return f"- **{name}: {'met' if met else 'not met'}** ({figures})"

    out = []
    for split in ("holdout", "users"):
        if (split, "hybrid") in r and (split, "wals") in r:
            ratio = r[(split, "hybrid")] / r[(split, "wals")]
            out.append(
                line(
                    f"{split}, hybrid ≥ 1.03 × WALS",
                    ratio >= 1.03,
                    f"{r[(split, 'hybrid')]:.4f} against {r[(split, 'wals')]:.4f}, ×{ratio:.3f}",
                )
            )
    queries = {m: v for (s, m), v in r.items() if s == "queries"}
    if {"hybrid", "wals", "text"} <= set(queries):
        best = max(queries, key=lambda m: queries[m])
        out.append(
            line(
                "queries, the hybrid best of the three",
                best == "hybrid",
                ", ".join(f"{m} {queries[m]:.4f}" for m in ("hybrid", "wals", "text")),
            )
        )
    if ("cold_items", "hybrid_cold") in r and ("cold_items", "text") in r:
        cold, text = r[("cold_items", "hybrid_cold")], r[("cold_items", "text")]
        out.append(
            line(
                "cold items, hybrid_cold ≥ 2 × text",
                cold >= 2 * text,
                f"{cold:.4f} against {text:.4f}, ×{cold / text if text else float('inf'):.1f}",
            )
        )
    return out


def importance_table(results: Sequence[dict[str, Any]]) -> str:
    """Features by split: the NDCG@20 drop of the head's validation pools when shuffled."""
    rows = [r for r in results if r.get("importances")]
    if not rows:
        return ""
    names = list(rows[0]["importances"])
    order = sorted(names, key=lambda n: -max(r["importances"].get(n, 0.0) for r in rows))
    head = "| feature | " + " | ".join(r["split"] for r in rows) + " |"
    rule = "|---|" + "---|" * len(rows)
    lines = [
        f"| {n} | " + " | ".join(f"{r['importances'].get(n, 0.0):+.4f}" for r in rows) + " |"
        for n in order
    ]
    return "\n".join([head, rule, *lines])


def _curves(results: Sequence[dict[str, Any]], ks: Sequence[int], metric: str, path: Path) -> None:
    splits = list(dict.fromkeys(r["split"] for r in results))
    models = list(dict.fromkeys(r["model"] for r in results))
    colors = {m: f"C{i}" for i, m in enumerate(models)}  # one colour per model throughout
    fig = Figure(figsize=(4 * len(splits), 3.8))
    axes = fig.subplots(1, len(splits), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for r in (r for r in results if r["split"] == split):
            ax.plot(ks, [r[f"{metric}@{k}"] for k in ks], marker="o", color=colors[r["model"]])
        ax.set_title(split)
        ax.set_xlabel("K")
        ax.set_xticks(list(ks))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric}@K")
    handles = [Line2D([], [], color=colors[m], marker="o", label=m) for m in models]
    fig.legend(handles=handles, loc="lower center", ncol=len(models), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)


def _importances(results: Sequence[dict[str, Any]], path: Path) -> None:
    rows = [r for r in results if r.get("importances")]
    fig = Figure(figsize=(4 * len(rows), 4.2))
    axes = fig.subplots(1, len(rows), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=True):
        names = list(r["importances"])
        ax.barh(names, [r["importances"][n] for n in names])
        ax.invert_yaxis()
        ax.set_title(f"{r['split']} ({r['model']})")
        ax.set_xlabel("NDCG@20 drop when shuffled")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_eval_report(
    results: Sequence[dict[str, Any]], ks: Sequence[int], out: Path, about: str
) -> Path:
    """``out/report.md`` with the results table, the importances table and three PNGs."""
    with atomic_directory(out) as tmp:
        _curves(results, ks, "recall", tmp / "recall.png")
        _curves(results, ks, "ndcg", tmp / "ndcg.png")
        parts = [
            "# walrus eval",
            about,
            "## Recall@K and NDCG@K",
            results_table(results, ks),
            *(["\n".join(targets)] if (targets := quality_targets(results)) else []),
            "![Recall@K](recall.png)\n\n![NDCG@K](ndcg.png)",
        ]
        table = importance_table(results)
        if table:
            _importances(results, tmp / "importances.png")
            parts += [
                "## What the head looks at",
                "Permutation importance: the drop in NDCG@20 over the head's validation "
                "pools when one feature's values are shuffled across candidates "
                "(`models.core.features` says what each one is).",
                table,
                "![importances](importances.png)",
            ]
        (tmp / "report.md").write_text("\n\n".join(parts) + "\n")
    return out / "report.md"


def write_tune_report(
    trials: Sequence[dict[str, Any]], objective: str, out: Path, about: str
) -> Path:
    """``out/tuning.md`` (every trial, best first; a pruned trial shows the recall it had
    when it was stopped) and ``out/tuning.png`` (the objective by trial and against each
    searched parameter)."""
    params = list(trials[0]["params"]) if trials else []
    ranked = sorted(trials, key=lambda t: (t.get("state") == "PRUNED", -t["value"]))
    with atomic_directory(out) as tmp:
        fig = Figure(figsize=(3.6 * (1 + len(params)), 3.2))
        axes = fig.subplots(1, 1 + len(params), squeeze=False)
        values = [t["value"] for t in trials]
        best = [max(values[: i + 1]) for i in range(len(values))]
        axes[0][0].plot(values, "o", alpha=0.5, label="trial")
        axes[0][0].plot(best, "-", label="best so far")
        axes[0][0].set_xlabel("trial")
        axes[0][0].set_ylabel(objective)
        axes[0][0].legend(fontsize=8)
        for ax, name in zip(axes[0][1:], params, strict=True):
            xs = [t["params"][name] for t in trials]
            ax.scatter(xs, values, alpha=0.6)
            if all(isinstance(x, float) for x in xs) and min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
            ax.set_xlabel(name)
        fig.tight_layout()
        fig.savefig(tmp / "tuning.png", dpi=110)
        head = "| trial | " + " | ".join(params) + f" | {objective} |"
        rule = "|---|" + "---|" * (len(params) + 1)
        lines = [
            f"| {t['number']} | "
            + " | ".join(_cell(t["params"][p]) for p in params)
            + f" | {t['value']:.4f}{' (pruned)' if t.get('state') == 'PRUNED' else ''} |"
            for t in ranked
        ]
        text = "\n\n".join(
            ["# walrus tune", about, "\n".join([head, rule, *lines]), "![tuning](tuning.png)"]
        )
        (tmp / "tuning.md").write_text(text + "\n")
    return out / "tuning.md"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
