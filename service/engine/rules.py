"""A request's business rules and explanations, as the engine resolves them: its filter as
a mask over the catalog, its diversity as the core's ``Diversity``, and, when asked, why
each answered item is there. The rules themselves live in ``models.core.attributes``,
``models.core.diversity`` and ``models.core.fold_in``, shared with offline evaluation."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

import numpy as np

from export.runtime import LoadedBundle
from models.core.attributes import with_item_indices
from models.core.candidates import usable
from models.core.fold_in import contributions
from models.core.types import Diversity, Recommendation, Request
from service.api import Contribution, Explanation, Filter, Source
from service.api import Diversity as DiversitySpec

FILTER_CACHE = 64
"""Filters whose masks are kept (an item's byte each: 500,000 items, 32 MB in all)."""
TOP_CONTRIBUTIONS = 3
"""History items an explanation names, the largest parts of the WALS score first."""

Lookup = Callable[[list[str] | None, str, list[str]], np.ndarray]


class FilterMasks:
    """The masks of recently used filters, by their canonical JSON: requests with the same
    filter get the same array, so a batch searches once per filter (one FAISS call and
    selector, one gather of the passing items; ``models.core.candidates``), and a popular
    filter's bitmap is built once. Masks are never written to once made."""

    def __init__(self, bundle: LoadedBundle, size: int = FILTER_CACHE) -> None:
        self.bundle, self.size = bundle, size
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def mask(self, spec: Filter | None, lookup: Lookup, warnings: list[str]) -> np.ndarray | None:
        """The items ``spec`` lets through (None: no filter); ``FilterError`` names the
        part of the filter that does not fit this bundle's attributes. Item ids in an
        ``item_id`` condition are looked up (unknown ones warned about and ignored)."""
        if not spec:
            return None
        resolved = with_item_indices(spec, lambda ids, where: lookup(ids, where, warnings))
        key = json.dumps(spec, sort_keys=True)
        with self._lock:
            if (cached := self._masks.get(key)) is not None:
                self._masks.move_to_end(key)
                return cached
        made = self.bundle.attributes.mask(resolved)
        if made is not None:
            made.flags.writeable = False
            with self._lock:
                self._masks[key] = made
                while len(self._masks) > self.size:
                    self._masks.popitem(last=False)
        return made


def diversity(bundle: LoadedBundle, spec: DiversitySpec | None) -> Diversity | None:
    if spec is None:
        return None
    codes = None
    if spec.field is not None:
        codes = bundle.attributes.diversity_codes(spec.field, "diversity.field")
    return Diversity(codes, spec.max_per_value or 0, spec.mmr)


def explanations(
    bundle: LoadedBundle,
    request: Request,
    interactions: np.ndarray,
    rec: Recommendation,
) -> list[Explanation]:
    """Per answered item: the head's score, the sources, the WALS and text scores, and the
    history items whose terms make up most of its WALS score (``fold_in.contributions``),
    each with its share of that score; the other terms' sum, and the rest: the WALS score
    less every term (0 to float precision for a vector folded in from the history; for a
    known user, what training's approximate solve left)."""
    tables = bundle.tables
    wals = request.user_vector if usable(request.user_vector) else None
    text = request.query_vector if usable(request.query_vector) else request.profile_vector
    text = text if usable(text) else None
    targets = tables.item_factors[rec.items]
    parts: np.ndarray | None = None
    if wals is not None and len(interactions):
        history, parts = contributions(
            bundle.wals_item_factors,
            bundle.gramian,
            bundle.col_weights,
            bundle.manifest.wals,
            interactions,
            targets,
        )
    out = []
    for row, item in enumerate(rec.items.tolist()):
        wals_score = float(targets[row] @ wals) if wals is not None else None
        because, other, rest = [], None, None
        if parts is not None and wals_score is not None:
            top = np.argsort(-parts[row], kind="stable")[:TOP_CONTRIBUTIONS]
            other = float(parts[row].sum() - parts[row, top].sum())
            rest = wals_score - float(parts[row].sum())
            for j in top.tolist():
                term = float(parts[row, j])
                share = term / wals_score if wals_score else 0.0
                because.append(
                    Contribution(
                        item_id=bundle.items.ids[int(history[j])],
                        title=bundle.titles[int(history[j])],
                        score=round(term, 6),
                        share=round(share, 4),
                    )
                )
        out.append(
            Explanation(
                head_score=float(rec.scores[row]),
                sources=cast("list[Source]", list(rec.sources[row])),
                wals_score=wals_score,
                text_score=float(tables.item_text_embeddings[item] @ text)
                if text is not None
                else None,
                because=because,
                other_terms=other,
                rest=rest,
            )
        )
    return out
