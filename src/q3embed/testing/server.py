"""Run a real uvicorn server on 127.0.0.1 in a background thread (tests and load benchmarks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

__all__ = ["running_server"]


@contextmanager
def running_server(app: FastAPI, startup_timeout_s: float = 30.0, graceful_timeout_s: int = 10) -> Iterator[str]:
    """Serve `app` on a free loopback port; yields its base URL; stops it (gracefully) on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           timeout_graceful_shutdown=graceful_timeout_s))
    thread = threading.Thread(target=server.run, name="q3embed-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
