"""The access log: one JSON line per request in the shape of every other line, with no user
ids, queries or bodies, and nothing at all above INFO."""

from __future__ import annotations

import json
import logging
import os

import pytest

from service.logs import AccessLog, configure_logging


@pytest.fixture
def pipe():
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def test_a_request_is_one_json_line(pipe):
    configure_logging("info")
    read, write = pipe
    fields = {"request_id": "r1", "method": "POST", "endpoint": "/v1/recommend", "status": 200}
    AccessLog(write).write({**fields, "ms": 1.5, "bundle_id": "b1"})
    line = os.read(read, 65536).decode()
    assert line.endswith("\n") and line.count("\n") == 1
    entry = json.loads(line)
    assert entry["logger"] == "walrus.service.access" and entry["message"] == "request"
    assert entry["level"] == "info" and entry["time"][10] == "T" and len(entry["time"]) == 23
    assert {k: entry[k] for k in fields} == fields and entry["bundle_id"] == "b1"


def test_above_info_nothing_is_written(pipe):
    read, write = pipe
    configure_logging("warning")
    try:
        AccessLog(write).write({"request_id": "r2"})
        os.set_blocking(read, False)
        with pytest.raises(BlockingIOError):
            os.read(read, 10)
    finally:
        logging.getLogger("walrus").setLevel(logging.INFO)
