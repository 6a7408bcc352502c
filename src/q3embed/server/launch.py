"""Start the server: load the models, print the configuration, run uvicorn until SIGTERM/SIGINT.

On SIGTERM uvicorn stops accepting connections and lets in-flight requests finish (up to the
graceful timeout); then the app's shutdown stops the engine once its queue is empty.
"""

from __future__ import annotations

import json
import logging
import sys

import uvicorn

from .app import create_app
from .config import ServerConfig

__all__ = ["serve"]

log = logging.getLogger("q3embed")


def serve(config: ServerConfig) -> None:
    from ..engine import Engine

    print(f"q3embed serve: configuration {json.dumps(config.printable(), default=str)}", file=sys.stderr, flush=True)
    engine = Engine.load(config.engine)
    app = create_app(engine, config)
    for served in app.state.q3embed.served_models():
        info = served.info
        does = " and ".join(served.kinds) + (f" by {served.rerank_by}" if served.rerank_by else "")
        print(f"q3embed serve: {does}: {info.name} ({info.kind}, {info.dimensions} dims, {info.dtype} on "
              f"{info.device}); answers to {', '.join(map(repr, served.names))}", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level,
        timeout_graceful_shutdown=int(config.graceful_timeout_s) or None))
    server.run()
