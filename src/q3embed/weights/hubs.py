"""The two model hubs q3embed downloads from, through their own client packages and caches:
the Hugging Face hub (huggingface_hub; HF_ENDPOINT names a mirror, as huggingface_hub reads it)
and ModelScope (the `modelscope` package, the optional extra q3embed[modelscope]; the usual source
where the Hugging Face hub cannot be reached). Each can look in its cache without a network, and
download into that same cache, so a model fetched once is found there again offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["HUBS", "HUB_NAMES", "Hub", "HubUnavailable", "hub_named"]


class HubUnavailable(Exception):
    """The hub could not be asked at all (its client package is not installed)."""


class Hub(Protocol):
    key: str  # the --hub value and the name prefix ("huggingface", "modelscope")
    title: str  # how messages name it

    def cached(self, repo_id: str, revision: str | None, patterns: list[str]) -> Path | None:
        """The snapshot folder in the local cache, without any network; None when not there."""
        ...

    def download(self, repo_id: str, revision: str | None, patterns: list[str]) -> Path:
        """Download (only the files matching `patterns`) into the hub's cache; raises on failure."""
        ...

    def where(self) -> str:
        """Where its cache is, for messages."""
        ...

    def endpoint(self) -> str:
        """Where it downloads from, for messages."""
        ...

    def fetch_command(self, repo_id: str, include: str, local_dir: str) -> str:
        """The one shell command that fetches the model where there is a network."""
        ...


@dataclass(frozen=True)
class HuggingFaceHub:
    key: str = "huggingface"
    title: str = "Hugging Face"

    def cached(self, repo_id: str, revision: str | None, patterns: list[str]) -> Path | None:
        # Imported here: huggingface_hub reads its environment at import, and only this path needs it.
        import huggingface_hub

        try:
            return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                                          local_files_only=True))
        except Exception:  # LocalEntryNotFoundError, or a cache entry of another revision: not cached
            return None

    def download(self, repo_id: str, revision: str | None, patterns: list[str]) -> Path:
        import huggingface_hub

        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns))

    def where(self) -> str:
        from huggingface_hub import constants

        return f"the Hugging Face cache {constants.HF_HUB_CACHE}"

    def endpoint(self) -> str:
        from huggingface_hub import constants

        return f"{constants.ENDPOINT} (HF_ENDPOINT sets a mirror)"

    def fetch_command(self, repo_id: str, include: str, local_dir: str) -> str:
        return f"hf download {repo_id}{include} --local-dir {local_dir}"


@dataclass(frozen=True)
class ModelScopeHub:
    key: str = "modelscope"
    title: str = "ModelScope"

    @staticmethod
    def _client(required: bool) -> Any:
        try:
            import modelscope
        except ImportError:
            if required:
                raise HubUnavailable("the modelscope package is not installed: pip install 'q3embed[modelscope]'") \
                    from None
            return None
        return modelscope

    def cached(self, repo_id: str, revision: str | None, patterns: list[str]) -> Path | None:
        client = self._client(required=False)  # without the package there is no ModelScope cache to read
        if client is None:
            return None
        try:
            return Path(client.snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                                 local_files_only=True))
        except Exception:  # modelscope's CacheNotFound and kin: not cached
            return None

    def download(self, repo_id: str, revision: str | None, patterns: list[str]) -> Path:
        client = self._client(required=True)
        return Path(client.snapshot_download(repo_id, revision=revision, allow_patterns=patterns))

    def where(self) -> str:
        if self._client(required=False) is None:
            return "not the ModelScope cache (pip install 'q3embed[modelscope]' to search it)"
        return "the ModelScope cache ($MODELSCOPE_CACHE, else ~/.cache/modelscope/hub)"

    def endpoint(self) -> str:
        return "https://www.modelscope.cn"

    def fetch_command(self, repo_id: str, include: str, local_dir: str) -> str:
        return f"modelscope download {repo_id}{include} --local-dir {local_dir}"


HUBS: tuple[Hub, ...] = (HuggingFaceHub(), ModelScopeHub())
HUB_NAMES = tuple(hub.key for hub in HUBS)


def hub_named(key: str) -> Hub:
    for hub in HUBS:
        if hub.key == key:
            return hub
    raise ValueError(f"unknown hub {key!r}: use {' or '.join(HUB_NAMES)}")
