"""Ray Data embed-corpus and Ray Serve replicas on a local Ray that the tests start and stop (loopback only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

# Ray reads these in the processes it starts and (some) when it is imported: nothing reported anywhere,
# no token file in $HOME, and the node's address is 127.0.0.1 (Ray's switch for single-machine clusters),
# so that every Ray process listens on loopback only. Set before the import, for the whole session.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
for _name, _value in RAY_ENV.items():
    os.environ.setdefault(_name, _value)

ray = pytest.importorskip("ray")

from q3embed.cli import main  # noqa: E402
from q3embed.distributed.ray_data import RayOptions, embed_corpus_ray  # noqa: E402
from q3embed.distributed.ray_serve import APP_NAME, ReplicaOptions, start_replicas, stop_replicas  # noqa: E402
from q3embed.engine import EngineOptions, ModelOptions  # noqa: E402
from q3embed.pipeline.corpus import CorpusJob, embed_corpus  # noqa: E402
from q3embed.pipeline.corpus_read import CorpusFields  # noqa: E402
from q3embed.pipeline.corpus_write import read_output  # noqa: E402
from q3embed.server.config import ServerConfig  # noqa: E402

ROWS = [{"id": f"r{i}", "title": f"Title {i}", "text": f"Row {i}: some words, then more" + " words" * (i % 9)}
        for i in range(50)]
SHARD = 8


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module (its start costs ~10 s); every process of it is stopped at the end."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def assert_same_output(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("part-*.parquet"))
    assert names == sorted(p.name for p in b.glob("part-*.parquet")) and names
    ta, tb = read_output(a), read_output(b)
    for column in ("id", "model", "dimensions", "tokens"):
        assert ta[column].to_pylist() == tb[column].to_pylist()
    va = np.stack(ta["vector"].to_numpy(zero_copy_only=False))  # [n, d]
    vb = np.stack(tb["vector"].to_numpy(zero_copy_only=False))
    assert (np.sum(va * vb, axis=1) >= 0.9999).all()  # unit vectors: the dot product is the cosine


# ---------------------------------------------------------------- Ray Data


def test_ray_data_output_equals_the_single_process_run(local_ray, tmp_path, tiny_embedding_dir, embedder):
    settings = ModelOptions(model=str(tiny_embedding_dir), dtype="float32", device="cpu")
    source = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    fields = CorpusFields(title_field="title")
    embed_corpus(CorpusJob(source, tmp_path / "single", settings, fields, shard_size=SHARD, batch_rows=5),
                 embedder=embedder)
    job = CorpusJob(source, tmp_path / "ray", replace(settings, threads=1), fields,
                    shard_size=SHARD, batch_rows=3)
    seen = []
    report = embed_corpus_ray(job, RayOptions(workers=2), progress=lambda rows, tokens: seen.append(rows))
    assert (report.rows, report.written, report.embedded) == (50, 7, 50) and sum(seen) == 50
    assert_same_output(tmp_path / "single", tmp_path / "ray")


def test_ray_cli_on_csv_resumes_and_matches(local_ray, capsys, tmp_path, tiny_embedding_dir, embedder):
    """The CLI with --ray joins the running Ray; shards already there are kept and the rest is filled in."""
    import csv

    source = tmp_path / "corpus.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "title", "text"])
        writer.writeheader()
        writer.writerows(ROWS)
    settings = ModelOptions(model=str(tiny_embedding_dir), dtype="float32", device="cpu")
    embed_corpus(CorpusJob(source, tmp_path / "single", settings, shard_size=SHARD), embedder=embedder)
    shutil.copytree(tmp_path / "single", tmp_path / "ray")
    for shard in (1, 6):
        (tmp_path / "ray" / f"part-{shard:05d}.parquet").unlink()
    code = main(["embed-corpus", str(source), "--output", str(tmp_path / "ray"), "--shard-size", str(SHARD),
                 "--model", str(tiny_embedding_dir), "--dtype", "float32", "--device", "cpu", "--threads", "1",
                 "--ray", "--workers", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert (report["written"], report["skipped"], report["embedded"]) == (2, 5, SHARD + 50 - 6 * SHARD)
    assert_same_output(tmp_path / "single", tmp_path / "ray")


def test_a_worker_error_comes_back_as_one_line(local_ray, capsys, tmp_path, tiny_embedding_dir):
    """Ray returns a worker's exception as its own types; the CLI still ends in our one-line error."""
    code = main(["embed-corpus", str(write_jsonl(tmp_path / "c.jsonl", ROWS[:5])), "--output", str(tmp_path / "out"),
                 "--dimensions", "8", "--model", str(tiny_embedding_dir), "--dtype", "float32", "--device", "cpu",
                 "--ray", "--workers", "1", "--threads", "1", "--no-progress"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("q3embed: error: dimensions must be from 32 to")
    assert not list((tmp_path / "out").glob("part-*"))


def test_our_error_is_found_in_ray_tracebacks():
    from q3embed.distributed import our_error
    from q3embed.errors import ModelNotFoundError

    status = ("Traceback (most recent call last):\n  ...\n"
              "q3embed.errors.ModelNotFoundError: model path '/x' does not exist\n")
    found = our_error(RuntimeError("Deploying application q3embed failed"), status)
    assert isinstance(found, ModelNotFoundError) and str(found) == "model path '/x' does not exist"
    assert our_error(RuntimeError("something else"), "no error of ours here") is None


# ---------------------------------------------------------------- Ray Serve


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[str]:
    """A Milvus (Lite) server on a loopback port: the shared store that stateless replicas need."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir", str(tmp_path / "milvus"),
               "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Milvus Lite server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def test_two_serve_replicas_answer_like_the_engine(local_ray, tiny_embedding_dir, embedder, milvus_server):
    from ray import serve

    config = ServerConfig(engine=EngineOptions(ModelOptions(str(tiny_embedding_dir), device="cpu", dtype="float32"),
                                               reranker=None),
                          host="127.0.0.1", port=free_port(), milvus_uri=milvus_server)
    started = start_replicas(config, ReplicaOptions(replicas=2, threads=1))
    try:
        states = serve.status().applications[APP_NAME].deployments
        assert [d.replica_states for d in states.values()] == [{"RUNNING": 2}]
        url = started.url
        assert httpx.get(url + "/health", timeout=30).json() == {"status": "ok"}
        texts = ["The capital of China is Beijing.", "Gravity is a force.", "Cats purr."]
        expected = embedder.encode(texts)

        def ask(_: int) -> np.ndarray:
            answer = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=60)
            assert answer.status_code == 200, answer.text
            return np.array([item["embedding"] for item in answer.json()["data"]], dtype=np.float32)

        with ThreadPoolExecutor(4) as pool:  # enough requests that both replicas take some
            for got in pool.map(ask, range(12)):
                np.testing.assert_allclose(got, expected, atol=1e-5)
        # Collections live in Milvus: what one replica writes, every replica reads.
        created = httpx.post(url + "/v1/collections", json={"name": "docs"}, timeout=60)
        assert created.status_code == 201, created.text
        documents = [{"id": f"d{i}", "text": text} for i, text in enumerate(texts)]
        upserted = httpx.post(url + "/v1/collections/docs/documents", json={"documents": documents}, timeout=60)
        assert upserted.status_code == 200, upserted.text
        for _ in range(6):
            hits = httpx.post(url + "/v1/collections/docs/search", json={"query": texts[1], "top_k": 1},
                              timeout=60).json()["hits"]
            assert hits[0]["document_id"] == "d1"
    finally:
        stop_replicas(started)
    assert APP_NAME not in serve.status().applications


def test_replicas_without_milvus_turn_collections_off(tiny_embedding_dir, embedder):
    """Without a shared Milvus each replica would see its own collections: the routes say so instead."""
    from fastapi.testclient import TestClient

    from q3embed.distributed.ray_serve import build_replica_app

    config = ServerConfig(engine=EngineOptions(ModelOptions(str(tiny_embedding_dir), device="cpu", dtype="float32"),
                                               reranker=None))
    with TestClient(build_replica_app(config, threads=None)) as client:
        for answer in (client.get("/v1/collections"), client.post("/v1/collections/docs/search", json={})):
            assert answer.status_code == 501
            assert "--milvus-uri http://host:19530" in answer.json()["error"]["message"]
        got = client.post("/v1/embeddings", json={"input": "Cats purr."}).json()["data"][0]["embedding"]
        np.testing.assert_allclose(got, embedder.encode("Cats purr."), atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--ray", "--replicas", "2", "--store-dir", "x"], "Ray Serve replicas are stateless"),
    (["--ray", "--replicas", "2", "--milvus-uri", "./m.db"], "Milvus Lite file"),
    (["--replicas", "2"], "--replicas needs --ray"),
])
def test_serve_flags_that_cannot_work_are_one_line_errors(capsys, argv, message):
    code = main(["serve", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def session_processes(session: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    found.append(int(entry.name))
            except OSError:
                pass  # gone meanwhile
    return found


def wait_until_session_ends(session: int, timeout_s: float) -> list[int]:
    """The processes still in `session` (the serve process started it) once they are gone or time is up."""
    deadline = time.monotonic() + timeout_s
    while (left := session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_serve_cli_with_ray_replicas_stops_everything_on_sigterm(tmp_path, tiny_embedding_dir, embedder):
    """`q3embed serve --ray --replicas 2` in its own process, with its own local Ray, stopped by SIGTERM."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **RAY_ENV, "Q3EMBED_PORT": str(port)}
    command = [sys.executable, "-m", "q3embed", "serve", "--ray", "--replicas", "2", "--threads", "1", "--no-reranker",
               "--model", str(tiny_embedding_dir), "--dtype", "float32", "--device", "cpu"]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if "replicas answering on" in (tmp_path / "serve.log").read_text():  # deployed, signals now stop it
                answer = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": ["Cats purr."]},
                                    timeout=30)
                assert answer.status_code == 200, answer.text
                break
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray Serve replicas did not answer in time"
            time.sleep(0.5)
        got = np.array(answer.json()["data"][0]["embedding"], dtype=np.float32)
        np.testing.assert_allclose(got, embedder.encode("Cats purr."), atol=1e-5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        assert wait_until_session_ends(process.pid, 30) == [], "Ray processes outlived `q3embed serve`"
    finally:
        for pid in session_processes(process.pid):  # only what the serve process started, one by one
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        process.wait(timeout=30)
        log.close()
