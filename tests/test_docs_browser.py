"""The API docs page in a real browser (headless Chromium, from the system packages; `.ci/run`
installs it): served offline, it must list the operations, not only answer 200."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from q3embed import Embedder
from q3embed.engine import Engine
from q3embed.server.app import create_app
from q3embed.testing.server import running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (.ci/run installs Debian's package)")
        pytest.skip("no headless Chromium here (apt-get install chromium)")
    return CHROMIUM


def _rendered(browser: str, url: str, tmp_path) -> str:
    """The page's DOM after its scripts ran, and a screenshot beside it for a person to look at."""
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    subprocess.run([*flags, f"--screenshot={tmp_path / 'docs.png'}", "--window-size=1280,2000", url],
                   capture_output=True, timeout=120, check=False)
    done = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_the_docs_page_lists_every_api_family(browser, tiny_embedding_dir, tmp_path):
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=64)
    with running_server(create_app(Engine(embedder))) as url:
        dom = _rendered(browser, url + "/docs", tmp_path)
    assert "Unable to render this definition" not in dom
    for path in ("/v1/embeddings", "/v1/rerank", "/embed", "/api/embed", "/api/tags", "/v1/collections"):
        assert f'data-path="{path}"' in dom, f"{path} is not listed on /docs"
    assert (tmp_path / "docs.png").stat().st_size > 10_000  # a page was drawn, not a blank one
