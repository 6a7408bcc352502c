"""The README's client examples, run as written against the server `make run` starts on a machine
without a network (model `auto` -> the bundled all-MiniLM-L6-v2, reranker `auto` -> cosine
similarity with it), with the real client libraries. Only the base URL is changed: to this
test's port."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import httpx
import numpy as np
import pytest
from hubs import install_fake_hubs

from q3embed.engine import Engine, EngineOptions
from q3embed.server.app import create_app
from q3embed.server.config import ServerConfig
from q3embed.testing.server import running_server

README = Path(__file__).resolve().parents[1] / "README.md"
README_URL = "http://127.0.0.1:8000"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    following = re.search(r"\n#{2,3} ", text[start + len(title) + 2:])
    return text[start: start + len(title) + 2 + (following.start() if following else len(text))]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


PYTHON_EXAMPLES = _blocks(_section("### Clients"), "python")
CURL_EXAMPLES = [command for block in _blocks(_section("## HTTP server"), "bash")
                 for command in block.replace("\\\n", " ").splitlines() if command.startswith("curl ")]


@pytest.fixture(scope="module")
def make_run_server(tmp_path_factory):
    """`q3embed serve` with its defaults, where the hubs cannot be reached (as in CI, and offline)."""
    with pytest.MonkeyPatch.context() as patch:
        install_fake_hubs(patch, tmp_path_factory.mktemp("hubs"))  # empty caches, no network
        engine = Engine.load(EngineOptions())
    with running_server(create_app(engine, ServerConfig())) as url:
        yield url


def _example_id(code: str) -> str:
    return re.search(r"^(?:from|import) (\w+)", code, flags=re.MULTILINE).group(1)


def test_the_readme_has_the_examples_this_module_runs():
    assert {_example_id(code) for code in PYTHON_EXAMPLES} == {
        "openai", "langchain_openai", "llama_index", "cohere", "ollama", "huggingface_hub"}
    assert len(CURL_EXAMPLES) == 2


@pytest.mark.parametrize("code", PYTHON_EXAMPLES, ids=_example_id)
def test_a_readme_client_example_runs_as_written(make_run_server, code):
    assert README_URL in code
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code.replace(README_URL, make_run_server), "README.md", "exec"), namespace)
    _check(_example_id(code), namespace, printed.getvalue())


def _check(example: str, ns: dict, printed: str) -> None:
    """What each example is for, checked on what it left behind."""
    unit = lambda v: pytest.approx(1.0, abs=1e-3) == float(np.linalg.norm(v))  # noqa: E731
    if example == "openai":
        assert ns["out"].model == MINILM and printed.split() == [MINILM, "384"]
        assert ns["queries"].data[0].embedding != ns["out"].data[0].embedding
    elif example == "langchain_openai":
        assert len(ns["vectors"]) == 2 and all(unit(v) for v in ns["vectors"]) and unit(ns["query"])
    elif example == "llama_index":
        assert len(ns["vector"]) == 384 and unit(ns["vector"])
    elif example == "cohere":
        assert ns["ranked"].results[0].index == 1 and printed.split()[0] == "1"
    elif example == "ollama":
        assert MINILM in printed and len(ns["out"].embeddings[0]) == 384
    elif example == "huggingface_hub":
        assert np.asarray(ns["vectors"]).shape[-1] == 384
        assert len(ns["scores"]) == 2 and ns["scores"][0] > ns["scores"][1]


@pytest.mark.parametrize("command", CURL_EXAMPLES, ids=lambda c: c.split()[2].rsplit("/", 1)[-1])
def test_a_readme_curl_example_answers(make_run_server, command):
    words = shlex.split(command)
    url = next(w for w in words if w.startswith(README_URL)).replace(README_URL, make_run_server)
    body = json.loads(words[words.index("-d") + 1])
    response = httpx.post(url, json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    if url.endswith("/v1/embeddings"):
        assert len(answer["data"][0]["embedding"]) == body["dimensions"]
    else:
        assert [r["index"] for r in answer["results"]] == [0]
