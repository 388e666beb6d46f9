"""walrus offline pipeline: data, WALS, text encoder, score head, evaluation.

``models.core`` is the numpy-only part that the service shares (docs/architecture.md).
Nothing is imported here, so importing ``models.core`` never pulls in torch.
"""
