"""Server configuration as data: what the CLI flags (and their Q3EMBED_* twins) fill in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..engine import EngineOptions
from ..errors import ConfigurationError
from ..text.unicode import check_encodable

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    engine: EngineOptions = field(default_factory=EngineOptions)
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    # Names clients may pass as `model`; the loaded model's own name is always accepted.
    served_model_names: tuple[str, ...] = ()
    max_items_per_request: int = 2048  # OpenAI's own limit for one embeddings request
    max_documents_per_rerank: int = 1000  # Cohere's limit
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout_s: float = 30.0  # a body that stops arriving for this long is answered 408
    graceful_timeout_s: float = 30.0
    log_level: str = "info"
    # Collections: the embedded store's directory (None: the default), or a Milvus URI instead.
    store_dir: str | None = None
    milvus_uri: str | None = None
    milvus_token: str | None = None

    def __post_init__(self) -> None:
        empty = [i for i, key in enumerate(self.api_keys) if not key.strip()]
        if empty:
            raise ConfigurationError(
                "an API key is empty (an unset variable in --api-key \"$KEY\"?): give the key, or leave "
                "--api-key out to serve without keys")
        for key in self.api_keys:
            check_encodable(key, "an API key")

    def printable(self) -> dict[str, Any]:
        """The configuration as printed at start-up: API keys are counted, never shown."""
        shown = asdict(self)
        shown["api_keys"] = f"{len(self.api_keys)} configured" if self.api_keys else "none (open server)"
        shown["milvus_token"] = "set" if self.milvus_token else None
        return shown
