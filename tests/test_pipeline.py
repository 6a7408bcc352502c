"""Pipeline parts without a store: reading files, chunking on token offsets, filter and name rules."""

from __future__ import annotations

import json

import pytest

from q3embed.errors import InputError
from q3embed.pipeline import ChunkingOptions, Document, ReaderOptions, Skipped, chunk_text, count_source, read_source
from q3embed.pipeline.ingest import as_document, content_hash
from q3embed.pipeline.model_check import model_key
from q3embed.pipeline.readers import html_to_text
from q3embed.store import check_collection_name, check_document_id, parse_filter
from q3embed.store.filters import to_milvus, to_sql

# ---------------------------------------------------------------- readers


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "docs"
    (root / "guide").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text("Beijing is the capital of China.", encoding="utf-8")
    (root / "guide" / "b.md").write_text("# Magnets\n\nMagnets attract iron.", encoding="utf-8")
    (root / "c.html").write_text("<html><head><title> The  Title </title><style>p {color: red}</style></head>"
                                 "<body><h1>Gravity</h1><p>is a&nbsp;force &amp; more.</p><script>x()</script>"
                                 "</body></html>", encoding="utf-8")
    (root / "bin.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    (root / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (root / "blank.txt").write_text("  \n\t ", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / ".git" / "config").write_text("hidden", encoding="utf-8")
    (root / ".hidden.txt").write_text("hidden", encoding="utf-8")
    return root


def test_a_folder_yields_documents_and_lists_what_it_skipped(folder):
    items = list(read_source(folder))
    docs = {d.id: d for d in items if isinstance(d, Document)}
    skipped = {s.source.rsplit("/", 1)[-1]: s.reason for s in items if isinstance(s, Skipped)}
    assert set(docs) == {"a.txt", "guide/b.md", "c.html"}
    assert docs["guide/b.md"].metadata == {"source": "guide/b.md", "format": "markdown"}
    assert docs["c.html"].metadata["title"] == "The Title"
    assert docs["c.html"].text == "Gravity\n\nis a force & more."
    assert skipped == {"bin.txt": "binary file", "latin1.md": "not UTF-8 text (byte 3)", "blank.txt": "no text",
                       "image.png": "unsupported file type '.png'"}
    assert count_source(folder) == len(items)


def test_a_single_text_file_and_a_missing_path(folder):
    assert list(read_source(folder / "a.txt")) == [
        Document("a.txt", "Beijing is the capital of China.", {"source": "a.txt", "format": "text"})]
    assert [type(i) for i in read_source(folder / "nope")] == [Skipped]


def test_jsonl_records_take_text_id_and_metadata(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [{"_id": "x1", "body": "first", "lang": "en", "n": 1}, {"body": "no id"}, {"_id": "x3", "body": ""},
             [1, 2], {"_id": True, "body": "bad id"}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\nnot json\n", encoding="utf-8")
    items = list(read_source(path, ReaderOptions(text_field="body", id_field="_id")))
    assert items[0] == Document("x1", "first", {"lang": "en", "n": 1})
    assert items[1] == Document("corpus.jsonl:2", "no id", {})
    assert [i.reason.split(" ")[0] for i in items[2:]] == ["no", "a", "the", "not"]
    assert all(isinstance(i, Skipped) and str(path) in i.source for i in items[2:])
    assert count_source(path) == 6
    only_lang = list(read_source(path, ReaderOptions(text_field="body", id_field="_id", metadata_fields=("lang",))))
    assert only_lang[0].metadata == {"lang": "en"}


def test_csv_and_tsv_records(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('id,text,lang\n1,"Hello, world",en\n2,,fr\n3,"multi\nline",de\n', encoding="utf-8")
    items = list(read_source(path))
    assert items[0] == Document("1", "Hello, world", {"lang": "en"})
    assert isinstance(items[1], Skipped) and items[1].source.endswith(":3")
    assert items[2] == Document("3", "multi\nline", {"lang": "de"})
    tsv = tmp_path / "rows.tsv"
    tsv.write_text("text\tkind\nhello\tgreeting\n", encoding="utf-8")
    assert list(read_source(tsv)) == [Document("rows.tsv:2", "hello", {"kind": "greeting"})]
    missing = tmp_path / "other.csv"
    missing.write_text("body,x\nhello,1\n", encoding="utf-8")
    (item,) = read_source(missing)
    assert isinstance(item, Skipped) and "no 'text' column (columns: body, x)" in item.reason


def test_html_to_text_keeps_blocks_apart():
    title, text = html_to_text("<div>one<br>two</div><ul><li>a</li><li>b</li></ul><noscript>no</noscript>")
    assert title == "" and text == "one\ntwo\n\na\n\nb"


# ---------------------------------------------------------------- chunking


def _offsets(text: str) -> list[tuple[int, int]]:
    """Whitespace-separated words as tokens: simple to reason about."""
    out, start = [], None
    for i, ch in enumerate(text + " "):
        if ch.isspace() and start is not None:
            out.append((start, i))
            start = None
        elif not ch.isspace() and start is None:
            start = i
    return out


def test_chunks_are_windows_of_tokens_with_overlap():
    text = " ".join(f"w{i}" for i in range(25))
    chunks = chunk_text(text, _offsets(text), ChunkingOptions(size=10, overlap=3))
    assert [c.text.split()[0] for c in chunks] == ["w0", "w7", "w14", "w21"]  # a stride of 10 - 3 tokens
    assert [c.tokens for c in chunks] == [10, 10, 10, 4]
    assert all(text[c.start:c.end] == c.text for c in chunks)
    assert chunks[-1].text.split()[-1] == "w24" and [c.index for c in chunks] == [0, 1, 2, 3]


def test_the_last_window_ends_at_the_text_end_and_short_texts_are_one_chunk():
    text = "  alpha beta  "
    (chunk,) = chunk_text(text, _offsets(text), ChunkingOptions(size=8, overlap=0))
    assert (chunk.text, chunk.start, chunk.end, chunk.tokens) == ("alpha beta", 2, 12, 2)
    assert chunk_text("   ", [], ChunkingOptions(size=8, overlap=0)) == []


def test_chunks_on_the_real_tokenizer_cover_the_text_and_fit_the_size(embedder):
    text = ("Beijing is the capital of China. 北京是中国的首都。 Emoji 😀 and accents: café, naïve. " * 12).strip()
    options = ChunkingOptions(size=24, overlap=6)
    chunks = chunk_text(text, embedder.token_offsets(text), options)
    assert len(chunks) > 5
    assert all(text[c.start:c.end] == c.text for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:]))  # neighbours overlap
    lengths = [len(ids) - 1 for ids in embedder.tokenize([c.text for c in chunks])]  # less <|endoftext|>
    assert max(lengths) <= options.size + 2


@pytest.mark.parametrize("size,overlap,match", [(4, 0, "chunk size"), (600, 0, "chunk size"), (16, 9, "overlap"),
                                                (16, -1, "overlap"), ("16", 0, "integer")])
def test_chunking_options_are_checked(size, overlap, match):
    with pytest.raises(InputError, match=match):
        ChunkingOptions(size, overlap).check(max_tokens=510)


# ---------------------------------------------------------------- documents, names, filters


def test_documents_are_checked_and_hashed_on_content():
    doc = as_document({"id": 7, "text": "hello", "metadata": {"a": 1}})
    assert doc == Document("7", "hello", {"a": 1})
    assert content_hash(doc) == content_hash(Document("other", "hello", {"a": 1}))
    assert content_hash(doc) != content_hash(Document("7", "hello", {"a": 2}))
    for bad, match in [({"id": "", "text": "x"}, "empty"), ({"id": "a", "text": " "}, "no text"),
                       ({"id": "a", "text": "x", "metadata": {"f": float("nan")}}, "JSON"),
                       ({"id": "a", "text": "x", "extra": 1}, "unknown fields"), ({"id": "a\nb", "text": "x"}, "control"),
                       ({"id": "x" * 2000, "text": "x"}, "bytes"), ("just text", "Document")]:
        with pytest.raises(InputError, match=match):
            as_document(bad)


@pytest.mark.parametrize("name", ["docs", "my-docs_2", "0abc", "a" * 64])
def test_good_collection_names(name):
    assert check_collection_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a\\b", "..", ".x", "-x", "_x", "Docs", "a b", "a.b", "a" * 65,
                                  "é", None, 3])
def test_bad_collection_names_say_the_rule(name):
    with pytest.raises(InputError):
        check_collection_name(name)


def test_document_ids():
    assert check_document_id("guide/intro.md") == "guide/intro.md" and check_document_id(12) == "12"
    with pytest.raises(InputError):
        check_document_id(True)


@pytest.mark.parametrize("spec,match", [
    ("{not json", "not valid JSON"), ("[1]", "JSON object"), ({"$not": {}}, "unknown filter operator"),
    ({"a": {"$regex": "x"}}, "unknown filter operator"), ({"a": {}}, "empty operator"),
    ({"a": {"$in": []}}, "list of 1"), ({"a": {"$in": "x"}}, "list of 1"), ({"a": None}, "string, number"),
    ({"a": [1]}, "string, number"), ({"a b": 1}, "invalid filter field"), ({"a..b": 1}, "invalid filter field"),
    ({"a": {"$gt": True}}, "not booleans"), ({"a": float("inf")}, "finite"), ({"$or": []}, "non-empty list"),
    ({"a": 2**70}, "64-bit"),
])
def test_bad_filters_are_input_errors(spec, match):
    with pytest.raises(InputError, match=match):
        parse_filter(spec)


def test_filters_translate_to_sql_and_milvus():
    where = parse_filter('{"lang": {"$in": ["en", "de"]}, "meta.year": {"$gte": 2020}, "ok": true}')
    sql, params = to_sql(where, "m")
    # $in: one flat membership test over a JSON-array parameter, however many values it has
    assert sql.count("json_extract(m, ?)") == 3 and params.count("$.meta.year") == 2 and 1 in params
    assert sql.count("json_each(?)") == 1 and '["en", "de"]' in params
    assert to_milvus(where) == ('((meta["lang"] == "en" or meta["lang"] == "de") and (meta["meta"]["year"] >= 2020) '
                                'and (meta["ok"] == true))')
    assert parse_filter(None) is None and parse_filter("") is None and parse_filter({}) is None


def test_model_names_compare_across_hub_ids_and_local_copies():
    assert model_key("Qwen/Qwen3-Embedding-0.6B") == model_key("/models/qwen3-embedding-0.6b/")
    assert model_key("Qwen/Qwen3-Embedding-0.6B") != model_key("Qwen/Qwen3-Embedding-4B")
