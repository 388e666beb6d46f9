"""Slow and greedy clients: each request must arrive whole within WALRUS_FRONT__READ_TIMEOUT_S,
headers stay under WALRUS_FRONT__MAX_HEADER_BYTES, and none of it slows a normal client."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.support.servers import Server

pytestmark = pytest.mark.slow


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


def test_trickling_clients_get_408_and_normal_ones_are_served(tiny_bundle):
    srv = Server(tiny_bundle, WALRUS_FRONT__READ_TIMEOUT_S="1.5")
    socks: list[socket.socket] = []
    try:
        srv.wait()
        start = time.monotonic()
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", srv.port))
            if i % 2:  # headers never finished
                sock.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-")
            else:  # headers done, the body never
                sock.sendall(
                    b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b'\r\nContent-Length: 100\r\n\r\n{"k": '
                )
            socks.append(sock)
        with httpx.Client(base_url=srv.url, timeout=5) as client:
            for _ in range(20):
                r = client.post("/v1/recommend", json={"query": "space robots", "k": 3})
                assert r.status_code == 200
        assert time.monotonic() - start < 1.5 + 5  # served while 200 connections hung on
        answers = [read_all(sock, 10) for sock in socks]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:20] for a in answers}
        assert time.monotonic() - start < 20  # closed by the deadline, not by the client
    finally:
        for sock in socks:
            sock.close()
        srv.stop()


def test_an_oversized_header_block_gets_431(tiny_bundle):
    with Server(tiny_bundle, WALRUS_FRONT__MAX_HEADER_BYTES="2048") as srv:
        srv.wait()
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
            assert read_all(sock, 10).startswith(b"HTTP/1.1 431")
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
