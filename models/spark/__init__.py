"""WALS on Apache Spark (``walrus train wals --engine spark``).

Imports numpy, pyspark (and pyarrow, for pyspark's Arrow input path) and ``models.core``
only, so a Spark worker image needs neither torch nor scipy (``make lint`` checks it).
"""
