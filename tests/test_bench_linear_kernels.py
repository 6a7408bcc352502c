"""bench/linear_kernels.py, the kernel table behind model/linear.py's row cut, runs end to end
(one matrix, one round) so that it cannot rot between the sessions that measure with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from q3embed.engine.memory import huge_page_buffer
from q3embed.model.block_linear import cpu_kernels_available

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_kernel_table_prints_every_kernel_at_every_row_count():
    done = subprocess.run([sys.executable, "linear_kernels.py", "--matrices", "1", "--rounds", "1"], cwd=BENCH,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.endswith("G") and "ms per product" not in line]
    names = [line[:32].strip() for line in rows]
    huge_pages = ["q3embed kernel bf16, 2 MB pages"] * (huge_page_buffer(1) is not None)
    ours = ["q3embed kernel bf16 (tiles)", *huge_pages, "Q8Linear (Q8_0 blocks)",
            "Q8Linear, Q8_0 inputs"] * cpu_kernels_available()
    assert names == ["F.linear fp32 (MKL)", "oneDNN fp32, plain weights", "oneDNN fp32, packed weights",
                     "q3embed Linear fp32", "F.linear bf16", "q3embed Linear bf16 (packed)",
                     "Int8Linear (fbgemm, per token)", *ours], done.stdout
    assert all(line.count("G") == 6 for line in rows), done.stdout  # 1, 8, 13, 27, 256, 2,048 rows
