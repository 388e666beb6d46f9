"""The loaded bundle in-process: encoder precision choice and batched serving."""

from __future__ import annotations

import numpy as np
import pytest

from export.format import writable_copy
from service.api import InvalidInput
from service.engine.recommender import Recommender
from service.messages import Recommend
from service.settings import Settings


@pytest.fixture(scope="module")
def recommender(tiny_bundle) -> Recommender:
    return Recommender(tiny_bundle, Settings(bundle=tiny_bundle))


def test_auto_precision_is_int8_on_the_cpu_and_fp16_is_in_the_bundle(recommender, tiny_bundle):
    cuda = "CUDAExecutionProvider" in recommender.onnx_providers
    assert recommender.encoder_precision == ("fp16" if cuda else "int8")
    assert recommender.onnx_providers[-1] == "CPUExecutionProvider"
    # The head always runs on the CPU: on an H100 its CUDA output differed from the CPU's by
    # 0.09 (TF32 matmuls), and 200 rows took longer there than here.
    assert recommender.head.session.get_providers() == ["CPUExecutionProvider"]
    assert (tiny_bundle / "encoder.fp16.onnx").is_file()


def test_fp16_precision_serves_the_fp16_file(tiny_bundle):
    rec = Recommender(
        tiny_bundle, Settings(bundle=tiny_bundle, engine={"encoder_precision": "fp16"})
    )
    assert rec.encoder_precision == "fp16"
    fp32 = Recommender(
        tiny_bundle, Settings(bundle=tiny_bundle, engine={"encoder_precision": "fp32"})
    )
    texts = ["space robots", "a quiet family drama"]
    cos = (rec.encoder.encode(texts) * fp32.encoder.encode(texts)).sum(1)
    assert cos.min() > 0.999


def _without(tiny_bundle, tmp_path, name: str):
    import json

    from export.format import MANIFEST, file_table

    copy = tmp_path / "bundle"
    writable_copy(tiny_bundle, copy)
    (copy / name).unlink()
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"] = {k: v.model_dump() for k, v in file_table(copy).items()}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


def test_an_explicit_precision_the_bundle_lacks_is_refused(tiny_bundle, tmp_path):
    from export.format import BundleError

    copy = _without(tiny_bundle, tmp_path, "encoder.fp16.onnx")
    with pytest.raises(BundleError, match=r"no encoder\.fp16\.onnx"):
        Recommender(copy, Settings(bundle=copy, engine={"encoder_precision": "fp16"}))


def test_auto_without_its_precision_chooses_fp32_and_says_so(tiny_bundle, tmp_path, caplog):
    copy = _without(tiny_bundle, tmp_path, "encoder.int8.onnx")
    rec = Recommender(copy, Settings(bundle=copy, device="cpu"))
    assert rec.encoder_precision == "fp32"
    assert "no int8 encoder; auto chose fp32" in caplog.text


def test_a_batch_answers_each_request_as_alone(recommender):
    users = recommender.users.ids
    reqs = [
        Recommend(user_id=users[0], k=5),
        Recommend(query="space robots", k=4),
        Recommend(user_id=users[1], query="space robots", k=6, exclude=["i1"]),
        Recommend(history=["i2", "i3"], k=5, exclude_seen=False),
        Recommend(k=3),
        Recommend(query="x" * 1_000, k=3),  # over WALRUS_LIMITS__QUERY_CHARS: its own 422
    ]
    together = recommender.recommend_batch(reqs)
    assert isinstance(together[-1], InvalidInput) and together[-1].field == "query"
    for req, got in zip(reqs[:-1], together[:-1], strict=True):
        alone = recommender.recommend(req)
        assert not isinstance(got, Exception)
        assert [i.item_id for i in got.items] == [i.item_id for i in alone.items]
        np.testing.assert_allclose(
            [i.score for i in got.items], [i.score for i in alone.items], atol=1e-6
        )


def test_n_wals_setting_limits_the_pool(tiny_bundle):
    """WALRUS_ENGINE__N_WALS=1 and N_TEXT=1: a user-only request for one item can only get the WALS
    index's top item or the text index's top item for the user's profile, whatever the head
    thinks of the others."""
    from models.core.features import text_profile

    narrow = Recommender(
        tiny_bundle, Settings(bundle=tiny_bundle, engine={"n_wals": 1, "n_text": 1})
    )
    wide = Recommender(tiny_bundle, Settings(bundle=tiny_bundle))
    assert (narrow.sizes.n_wals, narrow.sizes.n_text) == (1, 1) and wide.sizes.n_wals > 1
    differs = 0
    for user in narrow.users.ids[:20]:
        got = narrow.recommend(Recommend(user_id=user, k=1, exclude_seen=False))
        vector = np.asarray(narrow.bundle.user_factors[narrow.users.index(user)])
        wals_top = int(np.argmax(narrow.tables.item_factors @ vector))
        emb = narrow.tables.item_text_embeddings
        text_top = int(np.argmax(emb @ text_profile(emb, narrow.seen(narrow.users.index(user)))))
        assert got.items[0].item_id in {narrow.items.ids[wals_top], narrow.items.ids[text_top]}
        full = wide.recommend(Recommend(user_id=user, k=1, exclude_seen=False))
        differs += full.items[0].item_id != got.items[0].item_id
    assert differs > 0, "the setting made no difference: the test could not fail"


def test_cold_every_comes_from_the_bundle_unless_set(tiny_bundle):
    """The bundle's ``candidates.cold_every`` (0 here) unless WALRUS_ENGINE__COLD_EVERY says
    otherwise; what it does to a ranking is tested in tests/models/test_head.py."""
    plain = Recommender(tiny_bundle, Settings(bundle=tiny_bundle))
    every = Recommender(tiny_bundle, Settings(bundle=tiny_bundle, engine={"cold_every": 2}))
    assert plain.bundle.manifest.candidates.cold_every == plain.sizes.cold_every == 0
    assert every.sizes.cold_every == 2


def test_exclusions_are_dropped_inside_faiss_with_the_same_answer(tiny_bundle):
    """A request excluding more items than its pool holds is searched with an IDSelector for
    just the pool's size; its answer equals the over-fetching path's (the GPU copy's)."""
    settings = Settings(bundle=tiny_bundle, engine={"n_wals": 3, "n_text": 3})
    filtered, overfetched = Recommender(tiny_bundle, settings), Recommender(tiny_bundle, settings)
    overfetched.indexes.filtering = frozenset()
    assert filtered.indexes.filtering == {"wals", "text"}
    asked: list[tuple[int, bool]] = []
    for index in filtered.indexes.indexes.values():
        original = index.search

        def spy(queries, k, exclude=None, allowed=None, original=original):
            asked.append((k, exclude is not None and len(exclude) > 0))
            return original(queries, k, exclude, allowed)

        index.search = spy  # type: ignore[method-assign]
    items = filtered.items.ids
    reqs = [
        Recommend(user_id=filtered.users.ids[0], k=3, exclude=items[:12]),
        Recommend(query="space robots", k=4, exclude=items[5:20]),
        Recommend(history=items[:2], k=2, exclude=items[30:40]),
    ]
    for req in reqs:
        a, b = filtered.recommend(req), overfetched.recommend(req)
        assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
        assert not {i.item_id for i in a.items} & set(req.exclude or [])
    assert asked and all(flag and k <= 4 for k, flag in asked), asked
