"""bench/gpu.py is prepared on a CPU before its one run on a GPU: the same script, end to end,
on the tiny checkpoint (parity figures included), so it cannot rot between GPU runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"


def test_the_gpu_benchmark_runs_on_a_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--sizes", "tiny", "--work",
                           str(tmp_path / "work"), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    parity = report["parity"]
    assert parity["fp32"]["min_cosine"] >= 0.99999 and parity["fp32"]["single_text_min_cosine"] >= 0.99999
    assert parity["bfloat16 auto"]["min_cosine"] >= 0.999
    assert parity["reranker float32"]["max_abs_log_odds_difference"] <= 1e-3
    tiny = report["sizes"]["tiny"]
    assert tiny["q3embed"]["tokens_per_s"] > 0 and tiny["sentence_transformers"]["tokens_per_s"] > 0
    assert tiny["cosine_q3embed_vs_st_min"] >= 0.999  # both engines computed the same vectors
    assert tiny["q3embed"]["single_query_ms_without_graphs"] > 0 and tiny["q3embed"]["query_tokens"] > 20
