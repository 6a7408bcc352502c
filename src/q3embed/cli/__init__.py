"""The `q3embed` command: embed, rerank, similarity, info and serve on top of the engine API.

Design rules: data (JSON lines, .npy) goes to stdout or --output, messages go to stderr; every
mistake a user can make ends in one line `q3embed: error: ...` and exit code 2, never a traceback;
every option has a Q3EMBED_* environment twin (command line > environment > default).

Each command lives in its own module with an `add_<name>(subparsers)` function that defines its
flags and sets `handler`; COMMANDS below is the list the parser is built from.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..errors import Q3EmbedError
from . import collection_commands, corpus_command, eval_commands, model_commands, serve_command
from .common import PROG
from .env import annotate_env, apply_env, options  # noqa: F401  (options: used by tests and tools)

__all__ = ["main", "build_parser"]

Handler = Callable[[argparse.Namespace], int]
COMMANDS: tuple[Callable[[Any], None], ...] = (
    model_commands.add_embed,
    model_commands.add_rerank,
    model_commands.add_similarity,
    model_commands.add_info,
    serve_command.add_serve,
    collection_commands.add_index,
    collection_commands.add_search,
    collection_commands.add_collections,
    corpus_command.add_embed_corpus,
    eval_commands.add_eval,
    eval_commands.add_parity,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree, env twins shown in every flag's help."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Qwen3-Embedding and Qwen3-Reranker from the command line: embed texts, rerank\n"
        "documents, compare texts, and show which model, device and precision would be used.",
        epilog="Run 'q3embed COMMAND --help' for each command's flags and examples.\n\n"
        "Every flag has an environment twin, shown as [env: ...] in the help; a flag on the command\n"
        "line beats the environment, which beats the default. Boolean variables take 1/true/yes/on\n"
        "or 0/false/no/off. Data goes to stdout, messages to stderr; any error exits with code 2.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--quiet", action="store_true", help="do not print warnings such as which model auto chose")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    for p in _parser_tree(parser):
        annotate_env(p)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _parser_tree(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [parser, *_subcommands(parser).values()]


def _parsers_in_use(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[argparse.ArgumentParser]:
    """The top level and the chosen command only, so that a bad Q3EMBED_TOP_N cannot break `embed`.

    The top level has no flag that takes a value, so the first word not starting with '-' is the command.
    """
    command = next((word for word in argv if not word.startswith("-")), None)
    chosen = _subcommands(parser).get(command) if command else None
    return [parser] if chosen is None else [parser, chosen]



# ---------------------------------------------------------------- main


def _error(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _attach_log_handler(quiet: bool) -> tuple[logging.Handler, int, bool]:
    """Engine warnings (e.g. 'model auto -> ...') to stderr as 'q3embed: ...'; stdout stays data only."""
    logger = logging.getLogger("q3embed")
    saved = (logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False  # no second copy through a root handler an embedding program set up
    return handler, *saved


def _detach_log_handler(handler: logging.Handler, level: int, propagate: bool) -> None:
    logger = logging.getLogger("q3embed")
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


def _run(handler: Handler, args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except Q3EmbedError as exc:
        return _error(str(exc))
    except BrokenPipeError:  # `q3embed embed ... | head`: the reader left; stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `q3embed` script and `python -m q3embed`; returns the exit code.

    The environment is read here, at each call, never at import, so tests and embedding programs
    can change it between calls.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    problems = apply_env(_parsers_in_use(parser, arguments), os.environ)
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version and usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if problems:
        return _error(problems[0])
    log_state = _attach_log_handler(args.quiet)
    try:
        return _run(args.handler, args)
    finally:
        _detach_log_handler(*log_state)
