"""Bad input is a clear error that names the problem; MRL sizes are sliced then renormalised."""

from __future__ import annotations

import numpy as np
import pytest

from q3embed import ConfigurationError, Embedder, InputError, similarity
from q3embed.text.prompts import query_text


def test_every_mrl_size_is_the_sliced_then_renormalised_full_vector(embedder):
    texts = ["What is the capital of China?", "Gravity is a force."]
    full = embedder.encode(texts, normalize=False)
    for size in range(32, embedder.dimensions + 1):
        sliced = embedder.encode(texts, dimensions=size)
        expected = full[:, :size] / np.linalg.norm(full[:, :size], axis=1, keepdims=True)
        assert sliced.shape == (2, size)
        np.testing.assert_allclose(sliced, expected, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(sliced, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("size, pattern", [
    (31, "dimensions must be from 32 to 64 for this model, got 31"),
    (65, "dimensions must be from 32 to 64 for this model, got 65"),
    (0, "got 0"),
    (-5, "got -5"),
    ("64", "dimensions must be an integer, not str"),
    (True, "dimensions must be an integer, not bool"),
])
def test_mrl_sizes_outside_the_range_are_refused(embedder, size, pattern):
    with pytest.raises(InputError, match=pattern):
        embedder.encode(["x"], dimensions=size)


@pytest.mark.parametrize("texts, pattern", [
    ("", "input is an empty string"),
    ([], "input is an empty list"),
    (None, "input is None"),
    (42, "must be a string or a list of strings, not int"),
    (["ok", ""], "input 1 is an empty string"),
    (["ok", None], "input 1 is None"),
    (["ok", 7], "input 1 is a int, not a string"),
    ([b"bytes"], "input 0 is a bytes, not a string"),
])
def test_bad_texts_are_named(embedder, texts, pattern):
    with pytest.raises(InputError, match=pattern):
        embedder.encode(texts)


def test_whitespace_is_text_and_embedded_as_the_reference_does(embedder):
    """Only "" is empty: " " is a token the model embeds (the transformers reference gives it a vector)."""
    vectors = embedder.encode([" ", "\t\n", "x"])
    assert vectors.shape == (3, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.tokenize([" "])[0][-1] == embedder.tokenize(["x"])[0][-1]  # EOS appended as always


@pytest.mark.parametrize("call", [
    lambda e: e.encode(["fine", "bad \ud800"]),
    lambda e: e.encode(["x"], instruction="task \udfff"),
    lambda e: e.tokenize(["\ud800"]),
    lambda e: e.token_offsets("\ud800"),
])
def test_lone_surrogates_are_an_input_error_naming_the_field(embedder, call):
    with pytest.raises(InputError, match="not valid Unicode text: a lone surrogate"):
        call(embedder)


def test_over_length_with_truncation_off_names_the_item(tiny_embedding_dir):
    short = Embedder(str(tiny_embedding_dir), dtype="float32", device="cpu", max_length=16)
    assert short.encode(["word " * 50]).shape == (1, 64)  # truncated by default
    with pytest.raises(InputError, match=r"input 0 is \d+ tokens long .* maximum of 16"):
        short.encode(["word " * 50], truncate=False)


def test_an_instruction_means_a_query(embedder):
    """The one rule, the same in the Python API, the engine, embed-corpus, the CLI and HTTP."""
    task = "Find passages"
    implied = embedder.encode(["x"], instruction=task)
    np.testing.assert_array_equal(implied, embedder.encode(["x"], query=True, instruction=task))
    assert not np.allclose(implied, embedder.encode(["x"]))
    assert embedder.tokenize(["x"], instruction=task) == embedder.tokenize([query_text("x", task)])
    with pytest.raises(InputError, match="instruction is an empty string"):
        embedder.encode(["x"], instruction="")


def test_a_single_string_gives_one_vector(embedder):
    vector = embedder.encode("hello")
    assert vector.shape == (64,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector, embedder.encode(["hello"])[0])


def test_similarity_is_cosine(embedder):
    q = embedder.encode_queries(["What is the capital of China?"])
    d = embedder.encode_documents(["The capital of China is Beijing.", "Gravity."])
    scores = similarity(q, d)
    assert scores.shape == (1, 2)
    np.testing.assert_allclose(scores, q @ d.T, atol=1e-6)
    with pytest.raises(InputError, match="different sizes"):
        similarity(q, d[:, :32])


@pytest.mark.parametrize("query, documents, pattern", [
    ("", ["d"], "query is an empty string"),
    (None, ["d"], "query is None"),
    ("q", [], "document is an empty list"),
    ("q", ["d", ""], "document 1 is an empty string"),
    ("q", ["d", {"text": "x"}], "document 1 is a dict, not a string"),
])
def test_bad_rerank_input_is_named(reranker, query, documents, pattern):
    with pytest.raises(InputError, match=pattern):
        reranker.score(query, documents)


def test_bad_top_n(reranker):
    with pytest.raises(InputError, match="top_n must be a positive integer"):
        reranker.rerank("q", ["d"], top_n=0)
    assert len(reranker.rerank("q", ["a", "b"], top_n=10)) == 2


@pytest.mark.parametrize("kwargs, pattern", [
    ({"dtype": "float64"}, "unknown dtype 'float64'"),
    ({"device": "tpu"}, "unknown device 'tpu'|device 'tpu' is not supported"),
    ({"max_length": 10}, "max_length must be an integer from 16 to 32768"),
])
def test_bad_options_are_clear(tiny_embedding_dir, kwargs, pattern):
    with pytest.raises(ConfigurationError, match=pattern):
        Embedder(str(tiny_embedding_dir), **kwargs)
