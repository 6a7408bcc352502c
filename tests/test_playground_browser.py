"""The playground (/ui) in a real browser: headless Chromium from the system packages (`.ci/run`
installs it), driven by Playwright. Each view is filled in as a person would, its numbers are
checked against the API's own answers, and a screenshot of each lands in the test's folder."""

from __future__ import annotations

import json
import os
import shutil

import httpx
import numpy as np
import pytest

from q3embed import Embedder, Reranker
from q3embed.engine import Engine
from q3embed.server.app import create_app
from q3embed.server.config import ServerConfig
from q3embed.testing.server import running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "playground-key"
QUERIES = ["What is the capital of China?", "Explain gravity"]
DOCUMENTS = ["The capital of China is Beijing.", "Gravity attracts two bodies.", "Cats purr when content."]


@pytest.fixture(scope="module")
def served(tiny_embedding_dir, tiny_reranker_dir, tmp_path_factory):
    embedder = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=128)
    reranker = Reranker(str(tiny_reranker_dir), dtype="float32", device="cpu", max_length=256)
    config = ServerConfig(api_keys=(KEY,), store_dir=str(tmp_path_factory.mktemp("store")))
    with running_server(create_app(Engine(embedder, reranker), config)) as url:
        yield url, embedder, reranker


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (.ci/run installs Debian's package)")
        pytest.skip("no headless Chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture()
def page(browser, served, tmp_path):
    url = served[0]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.goto(url + "/")  # the server's address lands on the playground
    assert opened.url.endswith("/ui")
    opened.wait_for_selector("body[data-ready=true]")
    opened.fill("#api-key", KEY)
    opened.dispatch_event("#api-key", "change")
    opened.wait_for_function("document.getElementById('model-line').textContent.includes('tiny-embedding0')")
    yield opened
    context.close()


def _shot(page, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a page was drawn


def test_the_page_and_its_assets_are_served_offline_and_open(served):
    url = served[0]
    page = httpx.get(url + "/ui", timeout=30)
    assert page.status_code == 200 and "playground.js" in page.text and "http" not in page.text.split("<body>")[0]
    assert httpx.get(url + "/ui/static/playground.js", timeout=30).status_code == 200
    assert httpx.get(url + "/v1/models", timeout=30).status_code == 401  # the API behind it is not


def test_similarity_heatmap_shows_the_apis_cosines(page, served, tmp_path):
    _, embedder, _ = served
    page.fill("#sim-queries", "\n".join(QUERIES))
    page.fill("#sim-documents", "\n".join(DOCUMENTS))
    page.fill("#sim-dimensions", "32")
    page.click("#sim-run")
    page.wait_for_selector("#sim-table td")
    cells = page.eval_on_selector_all(
        "#sim-table td", "cells => cells.map(c => [+c.dataset.query, +c.dataset.document, +c.dataset.value])")
    expected = embedder.encode(QUERIES, query=True, dimensions=32) @ embedder.encode(DOCUMENTS, dimensions=32).T
    assert len(cells) == len(QUERIES) * len(DOCUMENTS)
    for i, j, value in cells:
        assert value == pytest.approx(float(expected[i, j]), abs=1e-5)
    assert "32 dimensions" in page.text_content("#sim-info")
    _shot(page, tmp_path, "similarity")


def test_rerank_lists_the_documents_best_first_with_the_apis_scores(page, served, tmp_path):
    _, _, reranker = served
    page.click("nav button[data-view=rerank]")
    page.fill("#rr-documents", "\n".join(DOCUMENTS))
    page.click("#rr-run")
    page.wait_for_selector("#rr-results li")
    shown = page.eval_on_selector_all("#rr-results li", "items => items.map(i => [+i.dataset.index, +i.dataset.score])")
    scores = reranker.score("What is the capital of China?", DOCUMENTS)
    assert [i for i, _ in shown] == sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])
    np.testing.assert_allclose([s for _, s in shown], sorted(scores, reverse=True), atol=1e-5)
    _shot(page, tmp_path, "rerank")


def test_search_ingests_from_the_page_and_shows_hits_before_and_after_reranking(page, served, tmp_path):
    url = served[0]
    page.click("nav button[data-view=search]")
    page.fill("#search-new", "playground")
    page.click("#search-create")
    page.wait_for_selector("#search-collection option[value=playground]", state="attached")
    page.fill("#ingest-texts", "\n".join(DOCUMENTS))
    notes = tmp_path / "notes.txt"
    notes.write_text("Beijing is a city of more than twenty million people.")
    page.set_input_files("#ingest-files", str(notes))
    page.click("#ingest-run")
    page.wait_for_function("document.getElementById('ingest-info').textContent.startsWith('4 of 4 documents')")
    page.fill("#search-query", "capital of China")
    page.fill("#search-top-k", "3")
    page.check("#search-rerank")
    page.click("#search-run")
    page.wait_for_selector("#search-reranked li")
    first = page.eval_on_selector_all("#search-first li",
                                      "items => items.map(i => [i.dataset.document, +i.dataset.score])")
    second = page.eval_on_selector_all("#search-reranked li", "items => items.map(i => i.dataset.document)")
    keyed = {"Authorization": f"Bearer {KEY}"}
    described = httpx.get(url + "/v1/collections/playground", headers=keyed, timeout=30).json()
    assert described["documents"] == 4  # three pasted lines and the uploaded file
    assert httpx.get(url + "/v1/collections/playground/documents/notes.txt", headers=keyed, timeout=30).json()[
        "metadata"] == {"source": "upload"}
    for rerank, shown in ((False, [d for d, _ in first]), (True, second)):
        api = httpx.post(url + "/v1/collections/playground/search", headers=keyed, timeout=60,
                         json={"query": "capital of China", "top_k": 3, "rerank": rerank}).json()
        assert shown == [h["document_id"] for h in api["hits"]] and len(shown) == 3
        if not rerank:
            np.testing.assert_allclose([s for _, s in first], [h["score"] for h in api["hits"]], atol=1e-5)
    _shot(page, tmp_path, "search")


def test_an_api_error_is_shown_as_the_apis_message(page):
    page.fill("#sim-dimensions", "7")  # below the Matryoshka minimum
    page.click("#sim-run")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error").startswith("400: ") and "dimensions" in page.text_content("#error")


def test_evaluation_results_are_charted_side_by_side(page, tmp_path):
    runs = []
    for name, ndcg in (("small.json", 0.31), ("full.json", 0.36)):
        report = {"dataset": "scifact", "model": {"name": "Qwen/Qwen3-Embedding-0.6B"}, "dimensions": 256,
                  "metrics": {"dense": {"NDCG@10": ndcg, "Recall@100": 0.8, "MRR@10": 0.3}}}
        (tmp_path / name).write_text(json.dumps(report))
        runs.append(str(tmp_path / name))
    page.click("nav button[data-view=evaluation]")
    page.set_input_files("#eval-files", runs)
    page.wait_for_selector("#eval-svg rect")
    bars = page.eval_on_selector_all("#eval-svg rect[data-measure='NDCG@10']",
                                     "bars => bars.map(b => +b.dataset.value)")
    assert bars == [0.31, 0.36]
    assert "small.json: scifact, Qwen/Qwen3-Embedding-0.6B, 256 dims" in page.text_content("#eval-table")
    _shot(page, tmp_path, "evaluation")
