"""The engine: the one holder of the bundle on a machine (per device), with the batching,
the query cache, reloads and every other piece of serving state. See ``engine.py``."""
