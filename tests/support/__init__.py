"""Real servers for the tests, each a context manager (stopped however the block ends), and
the helpers that wait on them. Tests import from here, never from another test module."""
