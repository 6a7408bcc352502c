"""The output folder of embed-corpus: Parquet shards and the manifest that makes resuming safe.

    OUTPUT/manifest.json          what the run was asked to do (input, model, sizes, prompt)
    OUTPUT/part-00000.parquet     rows [0, S) of the input: id, vector, model, dimensions, tokens
    OUTPUT/part-00001.parquet     rows [S, 2S) ...

A shard is written under a temporary name and renamed when complete, so a shard file that
exists is a finished shard: a resumed run skips it. The manifest is compared with the new run's
parameters first, so that a resumed run never mixes vectors of two models or two inputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConflictError, InputError

__all__ = ["MANIFEST_NAME", "CorpusManifest", "ShardData", "shard_path", "finished_shards", "shard_row_count",
           "prepare_output", "write_shard", "read_output", "check_same_model"]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_PART = "part-{:05d}.parquet"


@dataclass(frozen=True)
class CorpusManifest:
    """Everything that decides the content of the shards; batch sizes and worker counts do not."""

    input: str  # absolute path
    input_bytes: int
    input_mtime_ns: int
    model: str  # as asked for (a local path made absolute)
    dtype: str
    max_length: int | None
    dimensions: int | None  # None: the model's full size
    query: bool
    instruction: str | None
    text_field: str
    id_field: str  # resolved: "" means the row number
    title_field: str | None
    shard_size: int
    format: int = MANIFEST_FORMAT

    @classmethod
    def load(cls, path: Path) -> "CorpusManifest":
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"cannot read {path} ({exc}); use a new --output folder or --overwrite") from None


@dataclass(frozen=True)
class ShardData:
    """One shard's rows in input order."""

    ids: list[str]
    vectors: np.ndarray  # [n, d] float32, L2-normalised
    tokens: list[int]  # tokens the model saw per row
    model: str
    dimensions: int


def shard_path(output: Path, shard: int) -> Path:
    return output / _PART.format(shard)


def finished_shards(output: Path, shards: int) -> set[int]:
    return {k for k in range(shards) if shard_path(output, k).is_file()}


def shard_row_count(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def check_same_model(output: Path, done: set[int], model: str, dimensions: int) -> None:
    """A resumed run must make the vectors the finished shards hold (`auto` may pick another model later)."""
    import pyarrow.parquet as pq

    for shard in sorted(done)[:1]:
        table = pq.read_table(shard_path(output, shard), columns=["model", "dimensions"])
        if table.num_rows and (table["model"][0].as_py(), table["dimensions"][0].as_py()) != (model, dimensions):
            raise ConflictError(
                f"{output} holds vectors of {table['model'][0].as_py()} ({table['dimensions'][0].as_py()} dims), "
                f"this run makes {model} ({dimensions} dims): use a new --output folder, or --overwrite")


def _differences(old: CorpusManifest, new: CorpusManifest) -> list[str]:
    return [f"{name} {getattr(old, name)!r} -> {getattr(new, name)!r}"
            for name in asdict(new) if getattr(old, name) != getattr(new, name)]


def prepare_output(output: Path, manifest: CorpusManifest, overwrite: bool) -> None:
    """Create the folder, or check that the shards already in it came from the same job."""
    target = output / MANIFEST_NAME
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file; give a folder")
    if overwrite and output.is_dir():
        for stale in [target, *output.glob("part-*.parquet"), *output.glob(".part-*.tmp")]:
            stale.unlink()
    elif target.is_file():
        changed = _differences(CorpusManifest.load(target), manifest)
        if changed:
            raise ConflictError(f"{output} holds shards of another job ({'; '.join(changed)}): "
                                "use a new --output folder, or --overwrite to start again")
        return
    elif output.is_dir() and any(output.glob("part-*.parquet")):
        raise ConflictError(f"{output} holds shards but no {MANIFEST_NAME}: use a new --output folder or --overwrite")
    output.mkdir(parents=True, exist_ok=True)
    _write_atomically(target, (json.dumps(asdict(manifest), indent=2) + "\n").encode())


def _write_atomically(target: Path, data: bytes) -> None:
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, target)


def _table(data: ShardData) -> Any:
    import pyarrow as pa

    count, dims = len(data.ids), data.dimensions
    flat = pa.array(np.ascontiguousarray(data.vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.table({
        "id": pa.array(data.ids, type=pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dims),
        "model": pa.array([data.model] * count, type=pa.string()),
        "dimensions": pa.array([dims] * count, type=pa.int32()),
        "tokens": pa.array(data.tokens, type=pa.int32()),
    })


def write_shard(output: Path, shard: int, data: ShardData) -> Path:
    """Write shard k; it appears under its final name only once complete."""
    import pyarrow.parquet as pq

    if data.vectors.shape != (len(data.ids), data.dimensions):
        raise ValueError(f"shard {shard}: vectors {data.vectors.shape} for {len(data.ids)} ids")
    target = shard_path(output, shard)
    temp = output / f".{target.stem}.{os.getpid()}.tmp"
    pq.write_table(_table(data), temp, compression="zstd")
    os.replace(temp, target)
    return target


def read_output(output: str | Path) -> Any:
    """All shards of an output folder as one pyarrow Table, in input order (for checks and tools)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(Path(output).glob("part-*.parquet"))
    if not parts:
        raise InputError(f"no part-*.parquet shards in {output}")
    return pa.concat_tables([pq.read_table(part) for part in parts])
