"""A real Spark session on local[2], shared by the Spark tests (start-up takes seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest.importorskip("pyspark", reason="the spark extra is not installed")

from pyspark.sql import SparkSession

from models.spark.wals import session


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
