"""A real Spark session on local[2], shared by the Spark tests (start-up takes seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.tools import module_or_skip

module_or_skip("pyspark", "pip install -e '.[spark]'")

from pyspark.sql import SparkSession  # noqa: E402 -- after the skip

from models.spark.wals import session  # noqa: E402 -- after the skip


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = session(
        "local[2]",
        "walrus-tests",
        **{"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"},
    )
    yield spark
    spark.stop()
