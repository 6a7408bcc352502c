"""CPU thread policy: every usable CPU and no more, container quotas included."""

from __future__ import annotations

import os

import pytest
import torch

from q3embed.engine.device import set_cpu_threads, usable_cpus
from q3embed.errors import ConfigurationError


@pytest.fixture
def restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def test_cgroup_quota_caps_the_affinity_mask(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a CPU still needs one thread
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{(affinity + 8) * 100000} 100000\n")  # a quota above the mask changes nothing
    assert usable_cpus(cpu_max) == affinity
    assert usable_cpus(tmp_path / "missing") == affinity


def test_set_cpu_threads(restore_threads):
    assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
    assert set_cpu_threads() == usable_cpus() == torch.get_num_threads()
    with pytest.raises(ConfigurationError, match="positive"):
        set_cpu_threads(0)


def test_cli_threads_flag_and_env(restore_threads, tiny_embedding_dir, monkeypatch, capsys):
    from q3embed.cli import main

    assert main(["embed", "--model", str(tiny_embedding_dir), "--threads", "1", "hello"]) == 0
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("Q3EMBED_THREADS", "2")
    assert main(["embed", "--model", str(tiny_embedding_dir), "hello"]) == 0
    assert torch.get_num_threads() == 2
