"""The naive peer ``make bench-serve`` compares walrus with: a text-search service written the
way most people would write one. FastAPI, a sync route (run in FastAPI's thread pool),
transformers in eager PyTorch encoding each request alone, exact FAISS search, no rerank.
Same model and same item embeddings as the walrus bundle it is given.

    PEER_BUNDLE=artifacts/demo/bundles/current uvicorn bench.peer:app --port 8001
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModel, AutoTokenizer

from models.encoder import resolve_encoder_path

bundle = Path(os.environ.get("PEER_BUNDLE", "artifacts/demo/bundles/current")).resolve()
manifest = json.loads((bundle / "manifest.json").read_text())
model_path = resolve_encoder_path(manifest["encoder"]["name"])
tokenizer = AutoTokenizer.from_pretrained(model_path)
model = AutoModel.from_pretrained(model_path).eval()
items = json.loads((bundle / "items.json").read_text())
index = faiss.IndexFlatIP(manifest["dims"]["text"])
index.add(np.load(bundle / "item_text_embeddings.npy"))

app = FastAPI()


class Query(BaseModel):
    query: str
    k: int = 10


@app.post("/v1/recommend")
def recommend(body: Query) -> dict[str, list[dict[str, object]]]:
    batch = tokenizer([body.query], return_tensors="pt", truncation=True, max_length=64)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    vector = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    scores, ids = index.search(vector.numpy(), body.k)
    return {
        "items": [
            {"item_id": items[i]["item_id"], "title": items[i]["title"], "score": float(s)}
            for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True)
        ]
    }
