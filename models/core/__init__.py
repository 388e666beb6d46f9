"""The numpy-only core that training, evaluation and the service share: the request path
(``hybrid``), score-head features, fold-in, id maps, top-k, candidate pools and the cold rule.

Modules here import numpy and the standard library only (import-linter checks it), so the
serving image carries them without torch, transformers or scipy.
"""
