"""`q3embed serve`: the HTTP server (OpenAI, Cohere/Jina, TEI and Ollama APIs) over the engine."""

from __future__ import annotations

import argparse
from typing import Any

from ..engine import DEFAULT_MAX_REQUEST_TOKENS, EngineOptions
from ..errors import InputError
from .common import add_model_flags, model_options, positive_int, subparser
from .corpus_command import add_ray_flag, ray_address

__all__ = ["add_serve"]


def add_serve(sub: Any) -> None:
    p = subparser(sub, "serve", "serve the models over HTTP (OpenAI, Cohere/Jina, TEI, Ollama APIs)",
                  "Serve one embedding model and optionally one reranker over HTTP:\n"
                  "  POST /v1/embeddings (OpenAI)   POST /v1/rerank (Cohere/Jina)\n"
                  "  POST / /embed /rerank /tokenize /similarity (TEI)   POST /api/embed, GET /api/tags (Ollama)\n"
                  "  /weaviate/vectors /weaviate/rerank (Weaviate's transformers modules)\n"
                  "  /v1/collections/... (create, documents, search)\n"
                  "  GET /v1/models /health /metrics /docs\n"
                  "The model answers to its name, `auto` and the model auto stands for, its Ollama name\n"
                  "and every --served-model-name; start-up prints them.\n"
                  "Requests of all clients are batched together under --max-batch-tokens; when more\n"
                  "than --max-queued-requests wait, new ones get 429 with Retry-After.",
                  "  q3embed serve\n"
                  "  q3embed serve --model Qwen/Qwen3-Embedding-0.6B --reranker Qwen/Qwen3-Reranker-0.6B\n"
                  "  q3embed serve --model ollama:qwen3-embedding:0.6b   (a model Ollama has pulled)\n"
                  "  q3embed serve --host 0.0.0.0 --port 8080 --api-key $SECRET --no-reranker\n"
                  "  q3embed serve --ray --replicas 2 --no-reranker\n"
                  "  q3embed serve --ray auto --replicas 8 --host 0.0.0.0 --milvus-uri http://milvus:19530")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=positive_int, default=8000, help="port (default: 8000)")
    p.add_argument("--reranker", metavar="MODEL", default="auto",
                   help="reranker model: a directory, a Hugging Face id, or auto (default: auto)")
    p.add_argument("--no-reranker", action="store_true", help="serve embeddings only")
    p.add_argument("--api-key", action="append", metavar="KEY", default=None,
                   help="require this key (Authorization: Bearer KEY); repeat the flag for several keys, taken "
                   "as given; the environment twin takes a comma-separated list. An empty key is refused")
    p.add_argument("--served-model-name", action="append", metavar="NAME", default=None,
                   help="another name clients may pass as `model` (e.g. text-embedding-3-small); repeatable")
    p.add_argument("--max-queued-requests", type=positive_int, default=256, metavar="N",
                   help="requests that may wait for the model before new ones get 429 (default: 256)")
    p.add_argument("--max-queued-tokens", type=positive_int, default=262_144, metavar="N",
                   help="tokens that may wait for the model before new requests get 429 (default: 262144)")
    p.add_argument("--max-request-tokens", type=positive_int, default=DEFAULT_MAX_REQUEST_TOKENS, metavar="N",
                   help="tokens one request may hold (inputs x their tokens); larger ones get 413. Requests are "
                   f"computed batch by batch, interleaved with other clients' (default: {DEFAULT_MAX_REQUEST_TOKENS})")
    p.add_argument("--max-items-per-request", type=positive_int, default=2048, metavar="N",
                   help="inputs per embeddings request (default: 2048)")
    p.add_argument("--max-body-bytes", type=positive_int, default=16 * 1024 * 1024, metavar="N",
                   help="largest request body; larger ones get 413 (default: 16 MiB)")
    p.add_argument("--body-timeout", type=positive_int, default=30, metavar="SECONDS",
                   help="a request body that stops arriving for this long is answered 408 (default: 30)")
    p.add_argument("--graceful-timeout", type=positive_int, default=30, metavar="SECONDS",
                   help="on SIGTERM, how long in-flight requests may take to finish (default: 30)")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info",
                   help="uvicorn's log level (default: info)")
    p.add_argument("--store-dir", metavar="DIR",
                   help="where the embedded store keeps collections (default: as q3embed index)")
    p.add_argument("--milvus-uri", metavar="URI",
                   help="keep collections in Milvus instead: a .db file (Milvus Lite) or http://host:19530")
    p.add_argument("--milvus-token", metavar="TOKEN", help="user:password or API key of a secured Milvus")
    add_ray_flag(p, "serve --replicas copies on Ray (Ray Serve)")
    p.add_argument("--replicas", type=positive_int, default=1, metavar="N",
                   help="with --ray: stateless copies of the server, each with its own models (one per GPU, or "
                   "--threads CPUs each); collections then need a Milvus server (--milvus-uri http://...) "
                   "(default: 1)")
    add_model_flags(p)
    p.set_defaults(handler=cmd_serve)


def _split(values: list[str] | str | None) -> tuple[str, ...]:
    """Repeated flags as given (a key may hold a comma), or the environment twin's comma-separated list."""
    if values is None:
        return ()
    if isinstance(values, str):  # Q3EMBED_API_KEY=a,b: the only place a list is spelt with commas
        return tuple(part.strip() for part in values.split(","))
    return tuple(values)


def server_config(args: argparse.Namespace) -> Any:
    from ..server.config import ServerConfig

    engine = EngineOptions(model_options(args), reranker=None if args.no_reranker else args.reranker,
                           max_queued_requests=args.max_queued_requests,
                           max_queued_tokens=max(args.max_queued_tokens, args.max_batch_tokens or 0,
                                                 args.max_request_tokens),
                           max_request_tokens=args.max_request_tokens)
    return ServerConfig(engine=engine, host=args.host, port=args.port, api_keys=_split(args.api_key),
                        served_model_names=_split(args.served_model_name),
                        max_items_per_request=args.max_items_per_request, max_body_bytes=args.max_body_bytes,
                        graceful_timeout_s=float(args.graceful_timeout), body_timeout_s=float(args.body_timeout),
                        log_level=args.log_level,
                        store_dir=args.store_dir, milvus_uri=args.milvus_uri or None,
                        milvus_token=args.milvus_token or None)


def cmd_serve(args: argparse.Namespace) -> int:
    use_ray, address = ray_address(args.ray)
    if use_ray:
        from ..distributed.ray_serve import ReplicaOptions, run_replicas

        run_replicas(server_config(args), ReplicaOptions(replicas=args.replicas, address=address,
                                                         threads=args.threads))
        return 0
    if args.replicas != 1:
        raise InputError("--replicas needs --ray (Ray Serve); without Ray, run several `q3embed serve` processes "
                         "behind a load balancer (see docs/scaling.md)")
    from ..server.launch import serve  # FastAPI and uvicorn load only for this command

    serve(server_config(args))
    return 0
