"""Both model hubs, offline, faked at the boundary their packages expose: `huggingface_hub.
snapshot_download` and `modelscope.snapshot_download`. A cache lookup (local_files_only=True) goes
to the real function, on caches in a temporary folder; a download is recorded and answered from
what the test published (or fails as an offline machine does)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class FakeHubs:
    root: Path
    hf_cache: Path
    modelscope_cache: Path
    ollama_models: Path
    downloads: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (hub, repo_id, kwargs)
    published: dict[tuple[str, str], Path] = field(default_factory=dict)

    def publish(self, hub: str, repo_id: str, files: Path) -> None:
        """`files` (a folder) is what downloading `repo_id` from `hub` fetches."""
        self.published[(hub, repo_id)] = files

    def _fake(self, hub: str, real: Callable[..., str], cache: Path) -> Callable[..., str]:
        def snapshot_download(repo_id: str, revision: str | None = None, **kwargs: Any) -> str:
            if kwargs.get("local_files_only"):  # the package's own cache reading, on this test's cache
                return real(repo_id, revision=revision, cache_dir=str(cache), **kwargs)
            self.downloads.append((hub, repo_id, {"revision": revision, **kwargs}))
            source = self.published.get((hub, repo_id))
            if source is None:
                raise ConnectionError(f"[Errno -2] Name or service not known ({hub}, test machine offline)")
            target = self.root / "downloaded" / hub / repo_id
            shutil.copytree(source, target, dirs_exist_ok=True)
            return str(target)
        return snapshot_download


def install_fake_hubs(monkeypatch: pytest.MonkeyPatch, root: Path) -> FakeHubs:
    import huggingface_hub
    import huggingface_hub.constants

    hubs = FakeHubs(root, root / "hf-cache", root / "modelscope-cache", root / "ollama-models")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hubs.hf_cache))
    fake_hf = hubs._fake("huggingface", huggingface_hub.snapshot_download, hubs.hf_cache)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hf)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(hubs.modelscope_cache))
    monkeypatch.setenv("OLLAMA_MODELS", str(hubs.ollama_models))
    try:
        import modelscope
    except ImportError:
        return hubs
    monkeypatch.setattr(modelscope, "snapshot_download", hubs._fake("modelscope", modelscope.snapshot_download,
                                                                 hubs.modelscope_cache))
    return hubs


def write_hf_cache(cache: Path, repo_id: str, files: Path, commit: str = "0" * 40) -> Path:
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(files, repo / "snapshots" / commit, dirs_exist_ok=True)
    return repo / "snapshots" / commit


def write_modelscope_cache(cache: Path, repo_id: str, files: Path) -> Path:
    """The layout ModelScope has written for years (models/<owner>/<name>), which it still reads."""
    target = cache / "models" / repo_id
    shutil.copytree(files, target, dirs_exist_ok=True)
    return target
