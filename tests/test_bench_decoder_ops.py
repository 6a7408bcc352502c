"""bench/decoder_ops.py, the op-by-op table behind the CPU kernels of csrc/decoder_ops.cpp, runs end
to end (small sizes, few repeats) so that it cannot rot between the sessions that measure with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from q3embed.model.block_linear import cpu_kernels_available

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.skipif(not cpu_kernels_available(), reason="q3embed's CPU kernels need AVX512-BF16 and a C++ compiler")
def test_the_op_table_prints_every_op_and_every_batch():
    done = subprocess.run([sys.executable, "decoder_ops.py", "--tokens", "5", "--lengths", "7;3x2,9", "--repeats", "2"],
                          cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ops = [line.split(" tokens ")[1].split(" eager ")[0].strip() for line in done.stdout.splitlines()
           if line.lstrip().startswith("5 tokens")]
    assert ops == ["RMSNorm [T, 1024]", "add + RMSNorm [T, 1024]", "q/k norm + RoPE [T, 24, 128]",
                   "SwiGLU [T, 3072]"], done.stdout
    batches = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("attention")]
    assert batches == ["7", "3x2,9"], done.stdout
