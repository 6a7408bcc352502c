"""The scheduler (engine/jobs.py): every sequence once, under the budget, fair between jobs,
cancellable between batches, failures confined to their batch. A fake forward pass records what
the model would have computed, so each property is checked batch by batch, not by the clock."""

from __future__ import annotations

import pytest
import torch

from q3embed.engine.jobs import EmbedJob, RerankJob, Scheduler
from q3embed.errors import EngineFailure

BUDGET = 64


class FakeModel:
    """Pools a sequence into [its first token id, its length]; remembers each batch it ran."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.fail_on = fail_on

    def __call__(self, sequences):
        self.batches.append([tuple(s) for s in sequences])
        if self.fail_on is not None and any(self.fail_on in s for s in sequences):
            raise RuntimeError("injected fault")
        return torch.tensor([[float(s[0]), float(len(s))] for s in sequences])


def _job(marker: int, lengths: list[int]) -> EmbedJob:
    return EmbedJob([[marker] * n for n in lengths])


def test_jobs_at_the_same_stage_share_batches():
    model = FakeModel()
    scheduler = Scheduler(model, BUDGET)
    jobs = [_job(i, [4, 4]) for i in range(1, 6)]  # five requests that arrive together
    for job in jobs:
        scheduler.add(job)
    scheduler.step()
    assert all(job.future.done() for job in jobs) and len(model.batches) == 1


def test_every_sequence_once_within_the_budget_and_in_order():
    model = FakeModel()
    scheduler = Scheduler(model, BUDGET)
    jobs = [_job(1, [5, 100, 30, 30, 7, 1]), _job(2, [3, 3, 3])]
    for job in jobs:
        scheduler.add(job)
    while scheduler.step():
        pass
    computed = sorted(len(s) for batch in model.batches for s in batch)
    assert computed == sorted([5, 100, 30, 30, 7, 1, 3, 3, 3])
    assert all(len(b) == 1 or sum(len(s) for s in b) <= BUDGET for b in model.batches)
    for job, lengths in zip(jobs, ([5, 100, 30, 30, 7, 1], [3, 3, 3]), strict=True):
        assert job.future.result()[:, 1].tolist() == lengths  # each job gets its own rows, in order


def test_a_short_job_waits_one_batch_behind_a_long_one():
    model = FakeModel()
    scheduler = Scheduler(model, BUDGET)
    long = _job(1, [32] * 100)  # 50 batches of work
    scheduler.add(long)
    scheduler.step()
    scheduler.step()
    short = _job(2, [4])
    scheduler.add(short)
    scheduler.step()  # the least-served job goes first: the short one is in the very next batch
    assert short.future.done() and short.future.result().tolist() == [[2.0, 4.0]]
    assert not long.future.done()
    assert model.batches[2] == [(2,) * 4]  # its own small batch: it does not wait for a full one to compute


def test_a_cancelled_job_computes_nothing_more():
    model = FakeModel()
    scheduler = Scheduler(model, BUDGET)
    job = _job(1, [32] * 10)
    scheduler.add(job)
    scheduler.step()
    assert job.future.cancel()  # the client left after the first batch
    assert not scheduler.step()
    assert len(model.batches) == 1 and scheduler.take_finished() == [job]


def test_a_failing_batch_fails_only_its_jobs():
    model = FakeModel(fail_on=9)
    scheduler = Scheduler(model, 8)  # one job per batch
    bad, good = _job(9, [8, 8]), _job(1, [8])
    scheduler.add(bad)
    scheduler.add(good)
    while scheduler.step():
        pass
    with pytest.raises(EngineFailure, match="injected fault"):
        bad.future.result()
    assert good.future.result().tolist() == [[1.0, 8.0]]
    assert sum(1 for b in model.batches if (9,) * 8 in b) == 1  # the failed job's second batch never ran


class FakeReranker:
    def __init__(self) -> None:
        self.started = 0
        self.batches: list[list[int]] = []

    def start(self, prepared):
        self.started += 1
        return "state", [1] * len(prepared.pairs)

    def score(self, state, indices):
        assert state == "state"
        self.batches.append(list(indices))
        return [float(i) for i in indices]


class Prepared:
    def __init__(self, count: int) -> None:
        self.pairs = [[7] * 10 for _ in range(count)]
        self.tokens = 10 * count


def test_a_rerank_job_is_started_once_and_scored_in_batches_that_interleave():
    scorer = FakeReranker()
    model = FakeModel()
    scheduler = Scheduler(model, 4)
    rerank = RerankJob(Prepared(10).pairs, scorer=scorer, prepared=Prepared(10))
    scheduler.add(rerank)
    scheduler.step()
    embed = _job(3, [2])
    scheduler.add(embed)
    scheduler.step()
    assert embed.future.done()  # it did not wait for the rest of the rerank request
    while scheduler.step():
        pass
    assert scorer.started == 1 and sorted(i for b in scorer.batches for i in b) == list(range(10))
    assert all(len(b) <= 4 for b in scorer.batches)  # the budget counts what a pair costs after the prefix
    assert rerank.future.result() == [float(i) for i in range(10)] and rerank.tokens == 100


class DeferredCopies:
    """copy_back as on a GPU: rows come back later; records when each batch is launched and read."""

    def __init__(self, model: FakeModel, fail_batch: int | None = None) -> None:
        self.model, self.fail_batch, self.log = model, fail_batch, []

    def __call__(self, pooled):
        number = len(self.model.batches)
        self.log.append(("launch", number))
        copies = self

        class Pending:
            def wait(self):
                copies.log.append(("wait", number))
                if number == copies.fail_batch:
                    raise RuntimeError("CUDA error: an illegal memory access was encountered")
                return pooled

        return Pending()


def test_on_a_gpu_the_next_batch_is_launched_before_the_last_one_is_read():
    model = FakeModel()
    copies = DeferredCopies(model)
    scheduler = Scheduler(model, 8, copy_back=copies)  # one job per batch
    jobs = [_job(i, [8]) for i in (1, 2, 3)]
    for job in jobs:
        scheduler.add(job)
    scheduler.step()
    assert copies.log == [("launch", 1)] and not jobs[0].future.done()  # on its way, not read yet
    scheduler.step()
    assert copies.log == [("launch", 1), ("launch", 2), ("wait", 1)]  # batch 2 queued before 1 is read
    assert jobs[0].future.result().tolist() == [[1.0, 8.0]] and not jobs[1].future.done()
    while scheduler.step():
        pass
    assert copies.log[3:] == [("launch", 3), ("wait", 2), ("wait", 3)]
    assert [job.future.result().tolist() for job in jobs] == [[[1.0, 8.0]], [[2.0, 8.0]], [[3.0, 8.0]]]
    assert scheduler.in_flight is None


def test_a_lone_request_on_a_gpu_is_answered_without_waiting_for_more_work():
    model = FakeModel()
    scheduler = Scheduler(model, 64, copy_back=DeferredCopies(model))
    job = _job(7, [3, 5])
    scheduler.add(job)
    assert scheduler.step()  # launched; its rows on their way
    assert not scheduler.step()  # nothing else to launch: read them now
    assert job.future.result().tolist() == [[7.0, 3.0], [7.0, 5.0]]


def test_a_device_error_found_when_reading_fails_only_that_batch():
    model = FakeModel()
    scheduler = Scheduler(model, 8, copy_back=DeferredCopies(model, fail_batch=1))
    first, second = _job(1, [8]), _job(2, [8])
    scheduler.add(first)
    scheduler.add(second)
    while scheduler.step():
        pass
    with pytest.raises(EngineFailure, match="illegal memory access"):
        first.future.result()
    assert second.future.result().tolist() == [[2.0, 8.0]]


def test_a_job_cancelled_while_its_rows_are_on_their_way_is_dropped():
    model = FakeModel()
    scheduler = Scheduler(model, 8, copy_back=DeferredCopies(model))
    leaving, staying = _job(1, [8, 8]), _job(2, [8])
    scheduler.add(leaving)
    scheduler.add(staying)
    scheduler.step()  # leaving's first sequence on its way
    leaving.future.cancel()
    while scheduler.step():
        pass
    assert staying.future.result().tolist() == [[2.0, 8.0]]
    assert [batch[0][0] for batch in model.batches] == [1, 2]  # its second sequence never ran
    assert scheduler.jobs == [] and scheduler.in_flight is None


def test_an_empty_request_is_answered_not_spun_on():
    scheduler = Scheduler(FakeModel(), BUDGET)
    empty = EmbedJob([])
    scheduler.add(empty)
    assert not scheduler.step()
    assert empty.future.result().shape == (0, 0)
