"""Beyond one machine: batch embedding on Ray Data, HTTP replicas on Ray Serve.

Ray is an optional extra (`pip install q3embed[ray]`): nothing outside this package imports it,
and this package imports it only when a function here runs.

    ray_data.embed_corpus_ray(job, RayOptions(address="auto"))   # embed-corpus --ray
    serve.run_replicas(config, ReplicaOptions(replicas=4))        # serve --ray --replicas 4
"""

from __future__ import annotations

import logging
import re
from types import ModuleType
from typing import Any

from .. import errors
from ..errors import ConfigurationError, Q3EmbedError

__all__ = ["require_ray", "connect", "RAY_QUIET_ENV", "our_error"]

# Ray hands a worker's exception back as its own types, with ours only in the traceback text.
_OUR_ERROR_LINE = re.compile(r"q3embed\.errors\.(\w+): ([^\n]+)")

# Ray reads this from the environment of the processes it starts: no usage report sent anywhere.
RAY_QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def require_ray() -> ModuleType:
    """The `ray` module, or a one-line error saying how to install it."""
    import os

    for name, value in RAY_QUIET_ENV.items():
        os.environ.setdefault(name, value)
    try:
        import ray
    except ImportError:
        raise ConfigurationError("--ray needs Ray, which is an optional extra: pip install 'q3embed[ray]'") from None
    return ray


def connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at `address` (None: start a local Ray for this process); True when this call
    started Ray, so the caller must shut it down. An already connected process keeps its connection."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    return True


def our_error(exc: BaseException, *details: str) -> Q3EmbedError | None:
    """The q3embed error a Ray worker raised (model not found, bad dimensions, ...), or None.

    `details`: more text where Ray may have put the worker's traceback (e.g. a deployment status).
    """
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 10:
        if isinstance(current, Q3EmbedError):
            return current
        seen.append(current)
        current = getattr(current, "cause", None) or current.__cause__
    for text in [*map(str, seen), *details]:
        found = _OUR_ERROR_LINE.findall(text)
        kind = getattr(errors, found[-1][0], None) if found else None
        if isinstance(kind, type) and issubclass(kind, Q3EmbedError):
            return kind(found[-1][1].strip())
    return None
