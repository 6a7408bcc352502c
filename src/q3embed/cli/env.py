"""Environment twins: every --flag of every command has a Q3EMBED_* variable.

Command line > environment > default, so that containers and scripts can configure the tool
without rewriting command lines. The environment is read when `main` runs, never at import.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError

__all__ = ["ENV_PREFIX", "annotate_env", "apply_env", "options"]

ENV_PREFIX = "Q3EMBED_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The --flags of one parser (not --help/--version, not positionals, not subcommands)."""
    skip = (argparse._HelpAction, argparse._VersionAction)
    return [a for a in parser._actions if a.option_strings and not isinstance(a, skip)]


def _env_name(action: argparse.Action) -> str:
    """--max-batch-tokens -> Q3EMBED_MAX_BATCH_TOKENS, unless the flag was given its own name."""
    explicit = getattr(action, "env_var", None)
    if explicit:
        return explicit
    long = next(s for s in action.option_strings if s.startswith("--"))
    return ENV_PREFIX + long.removeprefix("--").upper().replace("-", "_")


def annotate_env(parser: argparse.ArgumentParser) -> None:
    """Record each flag's env twin and show it in --help, so the two can never disagree."""
    for action in options(parser):
        action.env_var = _env_name(action)  # type: ignore[attr-defined]
        action.help = f"{action.help} [env: {action.env_var}]"  # type: ignore[attr-defined]


def _env_bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use 1/true/yes/on or 0/false/no/off")


def _env_value(action: argparse.Action, raw: str) -> Any:
    """Convert and check an env value exactly as argparse would check the same text on the command line."""
    name = action.env_var  # type: ignore[attr-defined]
    if action.nargs == 0:  # store_true / store_false
        return action.const if _env_bool(name, raw) else action.default
    try:
        value = action.type(raw) if callable(action.type) else raw
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{name}={raw!r}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigurationError(f"{name}={raw!r}: choose from {', '.join(map(str, action.choices))}")
    return value


def apply_env(parsers: Sequence[argparse.ArgumentParser], environ: Mapping[str, str]) -> list[str]:
    """Turn set Q3EMBED_* variables into argparse defaults; a flag given on the command line still wins.

    Returns the problems instead of raising, so that `--help` works even with a broken variable.
    Empty variables count as unset.
    """
    problems = []
    for parser in parsers:
        for action in options(parser):
            raw = environ.get(action.env_var, "")  # type: ignore[attr-defined]
            if raw == "":
                continue
            try:
                action.default = _env_value(action, raw)
            except ConfigurationError as exc:
                problems.append(str(exc))
    return problems

