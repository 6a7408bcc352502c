"""The layering of docs/architecture.md, checked on the source: which package may import which,
the engine as a closed box, and configuration that never comes from the environment."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import q3embed.engine

SRC = Path(q3embed.engine.__file__).resolve().parents[1]  # src/q3embed

# package -> the q3embed packages it may import (besides errors and the package root's __version__)
ALLOWED = {
    "model": set(),
    "text": set(),
    "weights": {"model", "text"},
    "engine": {"model", "text", "weights"},
    "store": {"text"},
    "pipeline": {"engine", "store", "text"},
    "evaluate": {"engine", "pipeline", "text", "weights"},
    "server": {"engine", "pipeline", "store", "text"},
    "distributed": {"engine", "pipeline", "server"},
    "testing": {"model", "weights"},
    "cli": {"engine", "pipeline", "server", "store", "evaluate", "distributed", "weights"},
}
# Reading the environment inside the process, and why each place may: none of them configures q3embed.
ENVIRONMENT_READERS = {
    "cli/__init__.py": "the CLI turns Q3EMBED_* variables into flag defaults, once, in main()",
    "store/__init__.py": "the XDG base directory rule for the default store folder",
    "weights/ollama.py": "OLLAMA_MODELS, where the user's Ollama keeps the models it pulled (Ollama's setting)",
    "distributed/__init__.py": "switches off Ray's usage report in the processes Ray starts",
}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _imports(path: Path) -> list[tuple[list[str], list[str]]]:
    """(absolute module path as parts below q3embed, imported names) of each relative import."""
    package = path.relative_to(SRC).parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(package[:len(package) - (node.level - 1)])
            found.append((base + (node.module.split(".") if node.module else []), [a.name for a in node.names]))
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_each_package_imports_only_the_layers_below_it(path):
    parts = path.relative_to(SRC).parts
    if len(parts) == 1:
        return  # the package root and __main__ wire the public surface together
    own = parts[0]
    for module, _ in _imports(path):
        target = module[0] if module else ""
        if target in ("", own, "errors"):
            continue
        assert target in ALLOWED[own], f"{'/'.join(parts)} imports q3embed.{'.'.join(module)}"


@pytest.mark.parametrize("path", [p for p in _modules() if p.relative_to(SRC).parts[0] != "engine"],
                         ids=lambda p: str(p.relative_to(SRC)))
def test_outside_engine_only_its_public_api_is_used(path):
    public = set(q3embed.engine.__all__)
    for module, names in _imports(path):
        if module[:1] != ["engine"]:
            continue
        assert module == ["engine"], f"{path.name} imports the engine internal q3embed.{'.'.join(module)}"
        assert set(names) <= public, f"{path.name} imports {sorted(set(names) - public)}, not in engine.__all__"
    text = path.read_text(encoding="utf-8")
    for private in ("._backend", "._worker", "._embedder", "._reranker", "._scorer"):
        assert private not in text, f"{path.name} reaches into the engine through {private}"


def test_configuration_never_comes_from_the_environment():
    readers = {str(p.relative_to(SRC)) for p in _modules() if "os.environ" in p.read_text(encoding="utf-8")}
    assert readers <= set(ENVIRONMENT_READERS), f"os.environ read in {sorted(readers - set(ENVIRONMENT_READERS))}"


def test_no_two_modules_share_a_name():
    names: dict[str, list[str]] = {}
    for path in _modules():
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(path.name, []).append(str(path.relative_to(SRC)))
    assert not {name: where for name, where in names.items() if len(where) > 1}


def test_every_error_derives_from_the_one_base():
    import q3embed.errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.Q3EmbedError), name


def test_the_command_line_parses_and_answers_help_without_loading_torch():
    """`q3embed --help` and argument errors answer in a fraction of a second: nothing a parser needs
    may import torch (or transformers); models load in the handlers."""
    script = ("import sys; from q3embed.cli import build_parser; import q3embed, q3embed.engine, "
              "q3embed.server.config; build_parser(); heavy = sorted({'torch', 'transformers', 'faiss', 'pyarrow'} & set(sys.modules)); "
              "print(','.join(heavy))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"building the CLI parser imported {loaded}"
