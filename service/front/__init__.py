"""A front: HTTP in, a call to the engine, the engine's JSON out. No bundle arrays, no ONNX
session, no FAISS index (import-linter checks it). See ``app.py``."""
