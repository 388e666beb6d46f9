"""walrus offline pipeline: data, WALS, text encoder, score head.

Nothing is imported here on purpose: the service imports the numpy-only modules
(``models.fold_in``, ``models.features``) without pulling in torch.
"""
