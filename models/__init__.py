"""walrus offline pipeline: data, WALS, text encoder, score head.

Nothing is imported here on purpose: the service imports the numpy-only modules
(``models.core.fold_in``, ``models.core.features``) without pulling in torch.
"""
