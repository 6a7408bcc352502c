"""The BERT-family path (transformers encoders, e.g. all-MiniLM-L6-v2) against sentence-transformers.

    python bench/bert_path.py [--data ../shared/data/nfcorpus] [--docs 1000] [--rounds 3] [--dtype float32]

Same model files (the bundled all-MiniLM-L6-v2), same dtype, same truncation (the model's 256
tokens), same texts (the first --docs documents of a BEIR corpus, title + " " + text, as BEIR
feeds a dense model; or its queries with --queries), each engine in this process, alternating
round by round; prints each round's seconds and docs/s, the medians, the ratio and the cosine
between the two engines' vectors. sentence-transformers runs its own length-sorted batches of 32 (its default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from q3embed import Embedder
from q3embed.weights.resolve import bundled_minilm_dir


def corpus(data: Path, count: int, file: str = "corpus.jsonl") -> list[str]:
    texts = []
    with (data / file).open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append((record.get("title", "") + " " + record.get("text", "")).strip())
            if len(texts) >= count:
                break
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/nfcorpus")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", action="store_true", help="short texts: the corpus's queries.jsonl instead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' batch size")
    args = parser.parse_args()
    texts = corpus(args.data, args.docs, "queries.jsonl" if args.queries else "corpus.jsonl")
    model_dir = bundled_minilm_dir()
    dtype = getattr(torch, args.dtype)
    ours = Embedder(str(model_dir), device="cpu", dtype=args.dtype)
    theirs = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": dtype})
    tokens = sum(len(ids) for ids in ours.tokenize(texts))
    print(f"{len(texts)} docs, {tokens} tokens (truncated at {ours.info.max_length}), {args.dtype}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    runs = {"q3embed": lambda: ours.encode(texts),
            "sentence-transformers": lambda: theirs.encode(texts, batch_size=args.batch_size,
                                                           normalize_embeddings=True)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    vectors = {}
    for round_number in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            vectors[name] = np.asarray(run())
            times[name].append(time.perf_counter() - start)
            print(f"  round {round_number + 1} {name:22s} {times[name][-1]:6.2f} s  "
                  f"{len(texts) / times[name][-1]:6.1f} docs/s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:22s} median {median:6.2f} s  {tokens / median:7.0f} tokens/s")
    print(f"q3embed / sentence-transformers speed: {medians['sentence-transformers'] / medians['q3embed']:.2f}x; "
          f"min cosine {float((vectors['q3embed'] * vectors['sentence-transformers']).sum(axis=1).min()):.6f}; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
