"""Models a user already pulled with Ollama: `NAME[:TAG]` -> the GGUF blob in Ollama's store.

Ollama keeps a manifest per tag, `<models>/manifests/<registry>/<namespace>/<model>/<tag>`
(JSON: layers with media types and digests), and the files as `<models>/blobs/sha256-<hex>`.
The model layer is a plain GGUF file, so q3embed reads it where it lies: nothing is copied.
`<models>` is $OLLAMA_MODELS when set (as Ollama reads it), else ~/.ollama/models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ModelNotFoundError

__all__ = ["OLLAMA_PREFIX", "find_ollama_model", "ollama_models_dir", "resolve_ollama_model"]

OLLAMA_PREFIX = "ollama:"
_MODEL_LAYER = "application/vnd.ollama.image.model"
_REGISTRY, _NAMESPACE, _TAG = "registry.ollama.ai", "library", "latest"


def ollama_models_dir() -> Path:
    """Where the user's Ollama keeps its models (the user's Ollama setting, not q3embed's)."""
    configured = os.environ.get("OLLAMA_MODELS", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".ollama" / "models"


def _split_tag(name: str) -> tuple[str, str]:
    """'dengcao/Qwen3-Embedding-0.6B:Q8_0' -> ('dengcao/Qwen3-Embedding-0.6B', 'Q8_0'); no tag is 'latest'."""
    if ":" in name.rsplit("/", 1)[-1]:
        model, _, tag = name.rpartition(":")
        return model, tag or _TAG
    return name, _TAG


def _manifest_parts(model: str) -> list[str]:
    """'qwen3-embedding' -> registry.ollama.ai/library/qwen3-embedding; 'user/model' -> registry.ollama.ai/user/model;
    'hf.co/user/model' as it is."""
    parts = [p for p in model.split("/") if p]
    if len(parts) == 1:
        return [_REGISTRY, _NAMESPACE, *parts]
    return [_REGISTRY, *parts] if len(parts) == 2 else parts


def _child(folder: Path, name: str) -> Path | None:
    """`folder/name`, matched without regard to case (Ollama matches names that way)."""
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.name.lower() == name.lower()), None)


def _model_folder(models_dir: Path, parts: list[str]) -> Path | None:
    folder: Path | None = models_dir / "manifests"
    for part in parts:
        folder = _child(folder, part) if folder is not None else None
    return folder


def _blob(models_dir: Path, manifest: Path, label: str) -> Path:
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelNotFoundError(f"Ollama model {label}: its manifest {manifest} cannot be read ({exc})") from None
    digests = [layer.get("digest", "") for layer in layers
               if isinstance(layer, dict) and layer.get("mediaType") == _MODEL_LAYER]
    if not digests:
        raise ModelNotFoundError(f"Ollama model {label} has no model layer in {manifest}")
    blob = models_dir / "blobs" / digests[0].replace(":", "-")
    if not blob.is_file():
        raise ModelNotFoundError(f"Ollama model {label}: its file {blob} is missing (re-pull it: ollama pull {label})")
    return blob


def find_ollama_model(name: str, models_dir: Path | None = None) -> Path | None:
    """The GGUF blob of a pulled Ollama model, or None when that name and tag are not pulled."""
    models_dir = models_dir or ollama_models_dir()
    model, tag = _split_tag(name)
    folder = _model_folder(models_dir, _manifest_parts(model))
    manifest = _child(folder, tag) if folder is not None else None
    if manifest is None or not manifest.is_file():
        return None
    return _blob(models_dir, manifest, f"{model}:{tag}")


def resolve_ollama_model(name: str, models_dir: Path | None = None) -> Path:
    """Like find_ollama_model, but a name that is not pulled is an error naming the tags that are."""
    models_dir = models_dir or ollama_models_dir()
    found = find_ollama_model(name, models_dir)
    if found is not None:
        return found
    model, tag = _split_tag(name)
    folder = _model_folder(models_dir, _manifest_parts(model))
    pulled = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder is not None and folder.is_dir() else []
    have = f"the tags pulled for {model} are {', '.join(pulled)}" if pulled else f"no tag of {model} is pulled"
    raise ModelNotFoundError(
        f"Ollama model {model}:{tag} is not in the Ollama store {models_dir} ({have}): "
        f"run `ollama pull {model}:{tag}`, or set OLLAMA_MODELS to the folder Ollama keeps its models in")
