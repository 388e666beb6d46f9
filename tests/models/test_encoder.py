"""The encoder on a tiny RoBERTa (same code path as roberta-base) and the offline MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from models.encoder import DEFAULT_ENCODER, TextEncoder, build_tiny_roberta, fine_tune

TEXTS = [
    "space opera with robots and lasers",
    "romantic comedy in paris",
    "robots fight in space",
    "a quiet drama about a family",
    "lasers and robots in a space battle",
    "paris love story comedy",
] * 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_roberta(TEXTS, tmp_path_factory.mktemp("tiny"), vocab_size=300, seed=0)
    return TextEncoder.load(str(path), max_length=16)


def test_tiny_roberta_is_roberta_with_trained_bpe(tiny):
    assert tiny.module.model.config.model_type == "roberta"
    ids = tiny.tokenizer("robots in space")["input_ids"]
    assert ids[0] == tiny.tokenizer.bos_token_id and ids[-1] == tiny.tokenizer.eos_token_id
    assert tiny.tokenizer.unk_token_id not in ids  # the BPE was trained on these words


def test_embeddings_are_unit_norm_mean_pooled(tiny):
    import torch

    emb = tiny.encode(TEXTS[:4], batch_size=3)
    assert emb.shape == (4, tiny.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # by hand: mean of the last hidden states over the mask, then L2
    batch = tiny.tokenize(TEXTS[:2])
    with torch.no_grad():
        hidden = tiny.module.model(**batch)[0]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled = torch.nn.functional.normalize(pooled, dim=1).numpy()
    np.testing.assert_allclose(tiny.encode(TEXTS[:2]), pooled, atol=1e-5)


def test_padding_does_not_change_an_embedding(tiny):
    alone = tiny.encode(["robots"])
    padded = tiny.encode(
        ["robots", "a much longer text about a quiet family drama in paris"], batch_size=2
    )
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_truncation_at_max_length(tiny):
    long = " ".join(["robots"] * 200)
    batch = tiny.tokenize([long])
    assert batch["input_ids"].shape[1] == 16


def test_save_and_reload(tiny, tmp_path):
    tiny.save(tmp_path / "enc")
    again = TextEncoder.load(str(tmp_path / "enc"), max_length=16)
    np.testing.assert_allclose(again.encode(TEXTS[:3]), tiny.encode(TEXTS[:3]), atol=1e-6)


def test_fine_tune_lowers_contrastive_loss_and_respects_freezing(tmp_path):
    path = build_tiny_roberta(TEXTS, tmp_path, vocab_size=300, seed=1)
    enc = TextEncoder.load(str(path), max_length=16)
    frozen_before = enc.module.model.encoder.layer[0].attention.self.query.weight.detach().clone()
    top_before = enc.module.model.encoder.layer[1].output.dense.weight.detach().clone()
    queries = ["robots", "paris", "space", "family", "lasers", "love"]
    items = TEXTS[:6]
    losses = fine_tune(
        enc, queries * 4, items * 4, epochs=8, batch_size=6, learning_rate=3e-3, freeze_layers=1
    )
    assert losses[-1] < losses[0]
    assert (enc.module.model.encoder.layer[0].attention.self.query.weight == frozen_before).all()
    assert not (enc.module.model.encoder.layer[1].output.dense.weight == top_before).all()
    with pytest.raises(ValueError, match="equally many"):
        fine_tune(enc, ["a"], ["b", "c"])


def test_default_encoder_is_offline_minilm():
    enc = TextEncoder.load(DEFAULT_ENCODER)
    assert enc.module.model.config.model_type == "bert"  # all-MiniLM-L6-v2 is BERT, not RoBERTa
    emb = enc.encode(["a funny comedy", "a hilarious comedy film", "war documentary"])
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]  # real weights: related texts are closer


def test_eval_and_training_share_the_fine_tuned_encoder(tiny_pipeline_config):
    """Evaluation builds its text half with the same function as the bundle, fine-tuning
    included: with fine_tune on, the item embeddings evaluation sees must change, and a
    split fine-tunes on its own training interactions only (co-consumed pairs)."""
    from models.config import load_config
    from models.data.splits import Split, holdout_split
    from models.evaluation import EvalContext, Shared
    from models.pipeline import load_dataset, observed
    from models.text import prepare_text

    plain_cfg = load_config(tiny_pipeline_config)
    tuned_cfg = load_config(
        tiny_pipeline_config,
        [
            "encoder.fine_tune=true",
            "encoder.fine_tune_learning_rate=0.003",
            "encoder.fine_tune_epochs=2",
            # A few steps move the embeddings as surely as 20,000 pairs (the default), at a
            # fraction of the time: the test stays well inside its timeout on a loaded machine.
            "encoder.fine_tune_max_pairs=256",
        ],
    )
    dataset = load_dataset(plain_cfg.data)
    plain = prepare_text(plain_cfg, dataset, None)
    everything = observed(dataset)
    shared = Shared(tuned_cfg, dataset)
    tuned = EvalContext(shared, Split("all", everything, everything)).text
    assert tuned.embeddings.shape == plain.embeddings.shape
    assert np.abs(tuned.embeddings - plain.embeddings).max() > 1e-3
    part = holdout_split(everything, 0.5, seed=0)
    own = EvalContext(shared, part).text  # pairs from half the interactions: another encoder
    assert np.abs(own.embeddings - tuned.embeddings).max() > 1e-4
    # what the bundle is built from: the training pipeline's own text step
    from models.training import train_all

    trained = train_all(tuned_cfg, dataset, None, tiny_pipeline_config.parent / "tuned-encoder")
    np.testing.assert_allclose(
        trained.hybrid.tables.item_text_embeddings, tuned.embeddings, atol=1e-5
    )


def test_co_consumed_pairs_come_from_one_users_training_items():
    import scipy.sparse as sp

    from models.text import co_consumed_pairs

    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], np.float32))
    rows = [set(train[u].indices) for u in range(3)]
    pairs = co_consumed_pairs(np.random.default_rng(0), train, 200)
    assert len(pairs) == 200
    for a, b in pairs:
        assert a != b and any({a, b} <= row for row in rows[:2])  # user 2 has one item only
    assert {frozenset(p) for p in pairs} == {frozenset(p) for p in [(0, 1), (2, 3), (2, 4), (3, 4)]}
