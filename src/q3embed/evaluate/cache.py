"""On-disk cache of corpus embeddings: one float32 .npy and one JSON file per (model, dims, dataset).

The key covers everything that changes the vectors: the model (name, resolved path, the size and
modification time of its files, dtype, device type, maximum length), the output size and the
corpus file (path, size, modification time). Each file is written to a temporary name and renamed
into place, and the JSON (written last, holding the document ids) must match the .npy and the
corpus read now, so an interrupted or concurrent run can never hand back wrong vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import ModelInfo

__all__ = ["DEFAULT_CACHE_DIR", "EmbeddingCache", "cache_key"]

DEFAULT_CACHE_DIR = Path("~/.cache/q3embed/eval")
FORMAT = 1


def _file_stamp(path: Path) -> list[Any]:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _model_stamp(info: ModelInfo) -> dict[str, Any]:
    path = Path(info.path)
    if path.is_dir():
        files = [_file_stamp(p) for p in sorted(path.iterdir()) if p.is_file()]
    else:
        files = [_file_stamp(path)] if path.exists() else []
    return {"name": info.name, "path": str(path), "kind": info.kind, "dtype": info.dtype,
            "device": info.device.split(":")[0], "max_length": info.max_length, "files": files}


def cache_key(info: ModelInfo, dimensions: int, corpus_file: Path) -> str:
    corpus = corpus_file.resolve()
    stat = corpus.stat()
    payload = {"format": FORMAT, "model": _model_stamp(info), "dimensions": dimensions,
               "corpus": [str(corpus), stat.st_size, stat.st_mtime_ns]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _atomic_write(path: Path, write: Any) -> None:
    # delete=False: the finished file is renamed into place, not removed (closed by `with handle`).
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class EmbeddingCache:
    directory: Path

    def paths(self, key: str) -> tuple[Path, Path]:
        root = self.directory.expanduser()
        return root / f"{key}.npy", root / f"{key}.json"

    def load(self, key: str, doc_ids: list[str], dimensions: int) -> np.ndarray | None:
        """The cached [N, d] vectors, or None when absent, partial, or made for other documents."""
        vectors_path, meta_path = self.paths(key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("ids") != doc_ids:
                return None
            vectors = np.load(vectors_path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if vectors.dtype != np.float32 or vectors.shape != (len(doc_ids), dimensions):
            return None
        return vectors

    def store(self, key: str, doc_ids: list[str], vectors: np.ndarray, info: ModelInfo, dataset: str) -> Path:
        vectors_path, meta_path = self.paths(key)
        vectors_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(vectors_path, lambda f: np.save(f, np.ascontiguousarray(vectors, dtype=np.float32)))
        meta = {"format": FORMAT, "model": asdict(info), "dataset": dataset, "ids": doc_ids}
        _atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode("utf-8")))
        return vectors_path
