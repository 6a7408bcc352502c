"""`q3embed serve --ray --replicas N`: the HTTP app as a Ray Serve deployment of stateless replicas.

Each replica builds the same FastAPI app as `q3embed serve` (create_app) around its own Engine;
Ray Serve's proxy spreads requests over the replicas. Replicas keep no state, so collections
must live in a Milvus server that all of them reach (--milvus-uri http://host:19530). Without
one the collection routes answer with an error saying so; the embedded store (--store-dir) and
Milvus Lite files belong to one process and are refused.

    started = start_replicas(config, ReplicaOptions(replicas=2))   # returns once both answer on started.url
    stop_replicas(started)                                          # removes them again
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConfigurationError
from ..server.config import ServerConfig
from . import connect, our_error, require_ray

__all__ = ["APP_NAME", "ReplicaOptions", "check_stateless", "start_replicas", "stop_replicas", "run_replicas"]

APP_NAME = "q3embed"
DEFAULT_CPUS_PER_REPLICA = 4  # torch threads of a CPU replica when --threads is not given
_REMOTE_MILVUS = ("http://", "https://", "tcp://", "grpc://")
_COLLECTIONS_PATH = "/v1/collections"


@dataclass(frozen=True)
class ReplicaOptions:
    replicas: int = 1
    address: str | None = None  # None: start a local Ray; "auto" or ray://host:10001: join a cluster
    threads: int | None = None  # CPU threads per replica (None: the cluster's CPUs shared out, at most 4)


def check_stateless(config: ServerConfig) -> None:
    """Refuse the stores that one process owns: each replica would see a different set of collections."""
    if config.store_dir:
        raise ConfigurationError(
            "--store-dir keeps collections inside one server process, but Ray Serve replicas are stateless: "
            "keep collections in a Milvus server (--milvus-uri http://host:19530) or leave both out")
    if config.milvus_uri and not config.milvus_uri.startswith(_REMOTE_MILVUS):
        raise ConfigurationError(
            f"--milvus-uri {config.milvus_uri} is a Milvus Lite file, which one process owns; Ray Serve replicas "
            "need a Milvus server they all reach: --milvus-uri http://host:19530")


class _CollectionsOff:
    """ASGI middleware: every collection route answers as an unsupported feature (the one status of
    server/http_errors.py for it), with the reason, before any route runs."""

    MESSAGE = ("collections are off on these Ray Serve replicas because replicas keep no state: start "
               "`q3embed serve --ray` with --milvus-uri http://host:19530 to keep them in Milvus")

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == _COLLECTIONS_PATH or path.startswith(_COLLECTIONS_PATH + "/")):
            from ..server.http_errors import ErrorKind, error_response

            await error_response(path, ErrorKind.UNSUPPORTED, self.MESSAGE)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_replica_app(config: ServerConfig, threads: int | None) -> Any:
    """One replica: its own Engine behind the same app as `q3embed serve`; runs inside the replica."""
    import tempfile

    from ..engine import Engine
    from ..server.app import create_app

    models = replace(config.engine.models, threads=threads or config.engine.models.threads)
    engine = Engine.load(replace(config.engine, models=models))
    if config.milvus_uri:
        return create_app(engine, config)
    # The app opens a store at start-up; give it an empty private one, then turn its routes off.
    private = tempfile.mkdtemp(prefix="q3embed-replica-")
    app = create_app(engine, replace(config, store_dir=private))
    app.add_middleware(_CollectionsOff)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        try:
            async with inner(app):
                yield
        finally:
            shutil.rmtree(private, ignore_errors=True)

    app.router.lifespan_context = lifespan
    return app


def _resources(ray: Any, config: ServerConfig, options: ReplicaOptions) -> tuple[dict[str, float], int | None]:
    """(Ray resources of one replica, its torch threads); refuses what the cluster cannot place."""
    available = ray.cluster_resources()
    gpus, cpus = int(available.get("GPU", 0)), int(available.get("CPU", 0))
    if gpus and not str(config.engine.models.device).startswith("cpu"):
        if options.replicas > gpus:
            raise ConfigurationError(f"{options.replicas} replicas need a GPU each; the Ray cluster has {gpus}")
        return {"num_gpus": 1, "num_cpus": 1}, options.threads
    threads = options.threads or max(1, min(DEFAULT_CPUS_PER_REPLICA, cpus // options.replicas))
    if options.replicas * threads > cpus:
        raise ConfigurationError(f"{options.replicas} replicas x {threads} CPUs each need more than the Ray "
                                 f"cluster's {cpus} CPUs: lower --replicas or --threads")
    return {"num_cpus": threads}, threads


@dataclass(frozen=True)
class StartedReplicas:
    url: str
    owns_ray: bool  # this process started Ray, so it stops it too


def _status_messages(serve: Any) -> list[str]:
    """What Serve says about our deployments: a failed replica's traceback lands here."""
    try:
        app = serve.status().applications.get(APP_NAME)
    except Exception:  # the status is only used to explain another failure
        return []
    return [] if app is None else [app.message, *(d.message for d in app.deployments.values())]


def _deploy(ray: Any, config: ServerConfig, options: ReplicaOptions) -> str:
    """Run the deployment on the connected cluster; returns once every replica answers."""
    from ray import serve

    resources, threads = _resources(ray, config, options)

    def build() -> Any:  # runs in each replica: the engine loads there, never in this process
        return build_replica_app(config, threads)

    deployment = serve.deployment(serve.ingress(build)(), name="Q3EmbedReplica", num_replicas=options.replicas,
                                  ray_actor_options=resources)
    serve.start(http_options={"host": config.host, "port": config.port})
    try:
        serve.run(deployment.bind(), name=APP_NAME, route_prefix="/")
    except Exception as exc:  # e.g. every replica failed to load the model: say why in one line
        original = our_error(exc, *_status_messages(serve))
        if original is None or original is exc:
            raise
        raise original from None
    return f"http://{config.host}:{config.port}"


def _check(config: ServerConfig, options: ReplicaOptions) -> Any:
    check_stateless(config)
    if options.replicas < 1:
        raise ConfigurationError(f"--replicas must be 1 or more, got {options.replicas}")
    return require_ray()


def start_replicas(config: ServerConfig, options: ReplicaOptions) -> StartedReplicas:
    """Deploy N replicas on Ray Serve, listening on config.host:config.port; returns once all run."""
    ray = _check(config, options)
    owns = connect(ray, options.address)
    try:
        return StartedReplicas(_deploy(ray, config, options), owns)
    except BaseException:
        if owns:
            ray.shutdown()
        raise


def stop_replicas(started: StartedReplicas) -> None:
    """Remove the deployment (all of Serve when this process started Ray), then Ray itself if ours."""
    ray = require_ray()
    from ray import serve

    if started.owns_ray:
        serve.shutdown()
        ray.shutdown()
    else:
        serve.delete(APP_NAME)


def run_replicas(config: ServerConfig, options: ReplicaOptions) -> None:
    """`q3embed serve --ray`: deploy, wait for SIGTERM or SIGINT, then remove everything this process started."""
    ray = _check(config, options)
    shown = {**config.printable(), "replicas": options.replicas, "ray": options.address or "local"}
    print(f"q3embed serve: configuration {json.dumps(shown, default=str)}", file=sys.stderr, flush=True)
    started = StartedReplicas(f"http://{config.host}:{config.port}", connect(ray, options.address))
    ready = threading.Event()
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        if not ready.is_set():
            raise KeyboardInterrupt  # still deploying: unwind, and clean up below
        stop.set()

    # Installed after ray.init, whose own handlers would end the process without removing anything.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _deploy(ray, config, options)
        ready.set()
        print(f"q3embed serve: {options.replicas} Ray Serve replicas answering on {started.url}",
              file=sys.stderr, flush=True)
        stop.wait()
    finally:
        stop_replicas(started)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
