"""The bundle's ONNX models as the service runs them: the text encoder (with its tokenizer)
and the score head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def make_session(path: str | Path, providers: list[str], threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime session; ``threads`` 0 lets onnxruntime choose."""
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def load_tokenizer(path: str | Path, max_length: int, pad_id: int, pad_token: str) -> Tokenizer:
    """``tokenizer.json`` truncating to ``max_length`` and padding to the longest text."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


class OnnxTextEncoder:
    """tokenizer.json + encoder ONNX: texts -> (n, dim) float32 unit vectors."""

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        max_length: int,
        providers: list[str] | None = None,
        threads: int = 0,
    ) -> None:
        config_path = Path(tokenizer_path).with_name("tokenizer_config.json")
        pad_id, pad_token = 0, "[PAD]"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            pad_id, pad_token = int(config["pad_id"]), str(config["pad_token"])
        self.tokenizer = load_tokenizer(tokenizer_path, max_length, pad_id, pad_token)
        self.session = make_session(model_path, providers or ["CPUExecutionProvider"], threads)
        self.max_length = max_length

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, length) int64 input ids and attention mask, padded to the longest text."""
        batch = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
        return ids, mask

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids, mask = self.tokenize(texts)
        (out,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)

    @property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])


class OnnxHead:
    """head.onnx: (n, n_features) float32 -> (n,) scores."""

    def __init__(
        self, model_path: str | Path, providers: list[str] | None = None, threads: int = 0
    ):
        self.session = make_session(model_path, providers or ["CPUExecutionProvider"], threads)

    def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        (out,) = self.session.run(
            None, {"features": np.ascontiguousarray(features, dtype=np.float32)}
        )
        return np.asarray(out, dtype=np.float32).reshape(-1)
