"""Pipeline configurations for tests: small enough to train in seconds."""

from __future__ import annotations

TINY_TOML = """
output_dir = "{out}"
[data]
interactions = "{data}/interactions.csv"
catalog = "{data}/catalog.csv"
[data.attributes]
topic = "categorical"
year = "numeric"
price = "numeric"
in_stock = "boolean"
[wals]
dim = 8
iterations = 6
regularization = 0.1
[encoder]
name = "tiny-roberta"
max_length = 32
[head]
epochs = 4
max_requests = 400
[candidates]
n_wals = 20
n_text = 20
"""
