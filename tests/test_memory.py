"""engine/memory.py: a CPU model's weights moved into huge pages, in place and unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from q3embed import Embedder
from q3embed.engine import memory
from q3embed.engine.memory import HUGE_PAGE, huge_page_buffer, weights_in_huge_pages
from q3embed.engine.options import ModelOptions
from q3embed.errors import ConfigurationError
from texts import MIXED_TEXTS

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
needs_huge_pages = pytest.mark.skipif(huge_page_buffer(1) is None, reason="no madvise(MADV_HUGEPAGE) here")


def _mapping_of(pointer: int) -> dict[str, int]:
    """The mapping that holds `pointer`: its start address and its /proc/self/smaps sizes (kB)."""
    fields: dict[str, int] = {}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):  # a mapping's first line: start-end perms ...
            if inside:
                break
            start, end = (int(part, 16) for part in head.split("-"))
            inside = start <= pointer < end
            fields = {"start": start}
        elif inside and head.endswith(":") and line.split()[1].isdigit():
            fields[head[:-1]] = int(line.split()[1])
    assert inside, f"no mapping holds {pointer:#x}"
    return fields


@needs_huge_pages
def test_a_buffer_starts_on_a_huge_page_and_is_backed_by_them_where_the_system_allows():
    buffer = huge_page_buffer(3 * HUGE_PAGE)
    assert buffer.dtype == torch.uint8 and buffer.numel() == 3 * HUGE_PAGE
    assert buffer.data_ptr() % HUGE_PAGE == 0
    buffer.fill_(1)  # touch every page
    mapping = _mapping_of(buffer.data_ptr())
    if THP.exists() and "[never]" not in THP.read_text():
        assert mapping["AnonHugePages"] >= 2 * HUGE_PAGE // 1024, mapping


@needs_huge_pages
def test_parameters_and_buffers_move_in_place_with_their_values():
    torch.manual_seed(0)
    model = nn.ModuleDict({"first": nn.Linear(256, 512), "second": nn.Linear(256, 512)})
    model["second"].weight = model["first"].weight  # one Parameter in two modules
    model.register_buffer("table", torch.randn(300, 40))
    before = {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}
    parameters = dict(model.named_parameters())
    bias = model["first"].bias.data_ptr()  # 2 KB, under a page: stays
    x = torch.randn(3, 256)
    expected = model["first"](x)

    moved = weights_in_huge_pages(model)

    weight, table = model["first"].weight, model.table
    assert moved >= weight.numel() * 4 + table.numel() * 4
    assert dict(model.named_parameters()) == parameters  # the same Parameter objects
    assert model["second"].weight is weight  # moved once, still shared
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert torch.equal(t, before[name]), name
    assert model["first"].bias.data_ptr() == bias
    arena = _mapping_of(weight.data_ptr())["start"]
    assert _mapping_of(table.data_ptr())["start"] == arena  # one mapping holds both
    assert _mapping_of(bias)["start"] != arena
    assert torch.equal(model["first"](x), expected)
    for t in (weight, table):  # each its own storage: nothing aliases another through a shared one
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size() and t.storage_offset() == 0


def test_views_and_other_devices_stay_where_they_are(monkeypatch):
    base = torch.randn(64, 64)
    module = nn.Module()
    module.register_buffer("view", base[:32])  # a view of a larger storage
    pointer = module.view.data_ptr()
    weights_in_huge_pages(module)
    assert module.view.data_ptr() == pointer
    monkeypatch.setattr(memory, "huge_page_arena", lambda nbytes: None)  # a system without them
    plain = nn.Linear(64, 64)
    weight = plain.weight.data_ptr()
    assert weights_in_huge_pages(plain) == 0 and plain.weight.data_ptr() == weight


def _large_layer_weights(embedder: Embedder) -> list[torch.Tensor]:
    layers = embedder._backend.model.layers  # noqa: SLF001
    return [p for p in layers.parameters() if p.numel() * p.element_size() >= 4096 and not p.is_mkldnn]


@needs_huge_pages
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_cpu_embedder_keeps_its_layers_in_huge_pages_and_embeds_as_before(tiny_embedding_dir, dtype, monkeypatch):
    moved = Embedder(str(tiny_embedding_dir), dtype=dtype, device="cpu", compile="off")
    weights = _large_layer_weights(moved)
    mappings = [_mapping_of(p.data_ptr()) for p in weights]
    assert weights and len({mapping["start"] for mapping in mappings}) == 1  # one mapping holds them all
    assert min(p.data_ptr() for p in weights) % HUGE_PAGE == 0  # the first at the huge page it starts on
    if THP.exists() and "[never]" not in THP.read_text():
        assert mappings[0]["THPeligible"] == 1
    # huge_pages=False asks for no mapping at all. (Whether the heap that torch's weights land on
    # is THP-eligible is not this flag's doing: any library in the process may have advised a
    # part of it, as one in the full test run does.)
    arenas_asked: list[int] = []
    ask = memory.huge_page_arena
    monkeypatch.setattr(memory, "huge_page_arena", lambda nbytes: arenas_asked.append(nbytes) or ask(nbytes))
    plain = Embedder(str(tiny_embedding_dir), dtype=dtype, device="cpu", compile="off", huge_pages=False)
    assert arenas_asked == []
    plain_starts = {_mapping_of(p.data_ptr())["start"] for p in _large_layer_weights(plain)}
    assert mappings[0]["start"] not in plain_starts
    assert np.array_equal(moved.encode(MIXED_TEXTS), plain.encode(MIXED_TEXTS))
    Embedder(str(tiny_embedding_dir), dtype=dtype, device="cpu", compile="off")
    assert len(arenas_asked) == 1  # the spy sees the default ask for one


def test_huge_pages_is_a_yes_or_no_and_a_flag_turns_it_off(tiny_embedding_dir):
    from q3embed.cli import build_parser
    from q3embed.cli.common import model_options

    with pytest.raises(ConfigurationError, match="huge_pages must be true or false"):
        ModelOptions(huge_pages="no")
    parse = build_parser().parse_args
    model = ["--model", str(tiny_embedding_dir)]
    assert model_options(parse(["embed", *model, "hi"])).huge_pages is True
    assert model_options(parse(["embed", *model, "--no-huge-pages", "hi"])).huge_pages is False


@needs_huge_pages
def test_an_arena_refuses_a_tensor_past_its_end():
    arena = memory.huge_page_arena(4096)
    assert arena.tensor(4096 - 64, torch.float32, (16,)).numel() == 16
    with pytest.raises(ValueError, match="outside the arena"):
        arena.tensor(4096 - 60, torch.float32, (16,))


@needs_huge_pages
def test_a_reranker_on_huge_pages_scores_as_on_4_kb_pages(tiny_reranker_dir):
    from q3embed import Reranker
    from texts import DOCUMENTS, QUERIES

    scores = {pages: Reranker(str(tiny_reranker_dir), dtype="bfloat16", device="cpu", compile="off",
                              huge_pages=pages).score(QUERIES[0], DOCUMENTS) for pages in (True, False)}
    assert scores[True] == scores[False]


@needs_huge_pages
def test_each_old_copy_is_freed_before_the_next_one_moves(monkeypatch):
    import weakref

    module = nn.Module()
    for index in range(4):
        module.register_buffer(f"b{index}", torch.randn(64, 64))  # 16 KB each
    olds = [weakref.ref(module.get_buffer(f"b{index}")) for index in range(4)]
    alive_at_each_move = []
    replace = memory._replace  # noqa: SLF001

    def recording(module_, pointer, tensor):
        alive_at_each_move.append(sum(ref() is not None for ref in olds))
        replace(module_, pointer, tensor)

    monkeypatch.setattr(memory, "_replace", recording)
    weights_in_huge_pages(module)
    assert alive_at_each_move == [4, 3, 2, 1]  # the module's own reference, and nothing else, until moved
    assert all(ref() is None for ref in olds)
