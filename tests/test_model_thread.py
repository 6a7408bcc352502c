"""The engine's models are loaded, warmed up and run on one thread (engine/model_thread.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from q3embed.engine.engine import Engine
from q3embed.engine.jobs import EmbedJob
from q3embed.engine.model_thread import ModelThread
from q3embed.engine.options import EngineOptions, ModelOptions
from q3embed.engine.worker import EngineWorker


def test_a_model_thread_runs_tasks_in_order_and_hands_back_results_and_errors():
    thread = ModelThread("test-model-thread")
    order: list[int] = []
    first, second = thread.submit(lambda: order.append(1) or 1), thread.submit(lambda: order.append(2) or 2)
    assert (first.result(timeout=10), second.result(timeout=10), order) == (1, 2, [1, 2])
    assert thread.run(threading.current_thread) is thread.thread
    with pytest.raises(ZeroDivisionError):
        thread.run(lambda: 1 / 0)
    thread.close()
    thread.thread.join(timeout=10)
    assert not thread.thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        thread.submit(lambda: None)


def test_the_worker_runs_every_batch_and_its_finish_on_the_thread_it_was_given():
    thread = ModelThread()
    seen: list[threading.Thread] = []

    def forward(sequences):
        seen.append(threading.current_thread())
        return torch.ones(len(sequences), 3)

    def finish(pooled):
        seen.append(threading.current_thread())
        return pooled.numpy() * 2

    worker = EngineWorker(forward, thread=thread)
    assert not worker.alive
    worker.start()
    assert worker.alive
    vectors = worker.submit(EmbedJob([[1, 2], [3]], finish=finish)).result(timeout=10)
    worker.stop(timeout=10)
    assert not worker.alive
    np.testing.assert_array_equal(vectors, np.full((2, 3), 2.0))
    assert seen and all(t is thread.thread for t in seen)


def test_a_failing_finish_fails_its_request_and_not_the_worker():
    worker = EngineWorker(lambda sequences: torch.ones(len(sequences), 3))
    worker.start()
    with pytest.raises(Exception, match="ZeroDivisionError"):
        worker.submit(EmbedJob([[1]], finish=lambda pooled: 1 / 0)).result(timeout=10)
    assert worker.submit(EmbedJob([[1]])).result(timeout=10).shape == (1, 3)
    worker.stop(timeout=10)


def test_engine_load_builds_the_models_on_the_thread_that_runs_them(tiny_embedding_dir, monkeypatch):
    from q3embed.engine import engine as engine_module

    built_on: list[threading.Thread] = []
    original = engine_module.Embedder

    def recording_embedder(*args, **kwargs):
        built_on.append(threading.current_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "Embedder", recording_embedder)
    engine = Engine.load(EngineOptions(ModelOptions(str(tiny_embedding_dir), dtype="float32", device="cpu"),
                                       reranker=None))
    engine.start()
    try:
        ran_on = engine._thread.thread  # noqa: SLF001
        assert built_on == [ran_on] and ran_on is not threading.current_thread()
    finally:
        engine.stop(timeout=10)
