"""The argument dataclasses of a training run beside `MultiTaskTrainingArguments`, as in `run_glue.py`:
which model (`ModelArguments`) and which data (`DataArguments`), and how a config file and flags become them.

A config file (`hf-mtl train CONFIG.yaml|CONFIG.json [flags]`) is one mapping of flag names (without
`--`) to values; flags after it override it. It is read strictly: a parse error, a key given twice, an
unknown key or a value of the wrong type is refused with the file, the line and the fix. A list is
given item by item to a flag that takes several values (`--label_names`), joined with commas for a
comma-separated flag (`tasks: [sst2, mrpc]` is `--tasks sst2,mrpc`), and refused elsewhere; a mapping is
passed as JSON (`task_weights: {sst2: 1, stsb: 0.5}`); `null` keeps the default.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import numbers
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .modeling import DEFAULT_MODEL
from .training_args import MultiTaskTrainingArguments

#: What a config file's name ends with (the first argument of `hf-mtl train`).
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
#: Flags that take one comma-separated string: a list in a config file is joined with commas for them.
COMMA_SEPARATED_FLAGS = ("tasks",)


@dataclass
class ModelArguments:
    """Which encoder to fine-tune (or which hf_mtl model to continue from)."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Encoder checkpoint (Hub id or local folder), or a saved hf_mtl model to continue from."},
    )
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before each task head (default: the encoder's hidden dropout)."}
    )

    def __post_init__(self) -> None:
        p = self.classifier_dropout
        if p is not None and (isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1):
            raise ValueError(f"--classifier_dropout must be a probability in [0, 1) (e.g. 0.1), or unset for the "
                             f"encoder's hidden dropout; got {p!r}.")


@dataclass
class DataArguments:
    """Where the data comes from and how it is cut, as in transformers' run_glue.py."""

    glue_dir: str | None = field(
        default=None,
        metadata={"help": "Local folder in the original GLUE layout (SST-2/train.tsv, ...). Default: $GLUE_DIR, else the Hub (nyu-mll/glue)."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated (batches are padded dynamically)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows of each task."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows of each evaluation split."})
    eval_available_only: bool = field(
        default=False,
        metadata={"help": "With --do_eval, evaluate the tasks whose evaluation file exists and leave out the others "
                  "(default: a task without one is an error, before training). eval_glue_score then covers the "
                  "evaluated tasks only: the log says which, and the results record them as eval_glue_score_tasks "
                  "and eval_skipped_tasks."},
    )

    def __post_init__(self) -> None:
        _check_count("max_seq_length", self.max_seq_length, 1, "tokens per input; 128 is the usual GLUE value")
        for name in ("max_train_samples", "max_eval_samples"):
            _check_count(name, getattr(self, name), 1, "rows kept per task", unset="every row is kept")


def _check_count(flag: str, value: Any, minimum: int, meaning: str, unset: str | None = None) -> None:
    """A ValueError naming `--flag` and `value` unless `value` is a whole number >= `minimum` (or None when
    `unset` says what leaving it unset means)."""
    if value is None and unset is not None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        fix = f", or unset ({unset})" if unset else ""
        raise ValueError(f"--{flag} must be a whole number >= {minimum} ({meaning}){fix}, got {value!r}.")


# ---- config files -----------------------------------------------------------------------------------


@dataclass
class ConfigFile:
    """A parsed config file: its top-level {key: value} and the line of each key (1-based, None if unknown)."""

    path: str
    values: dict[str, Any]
    lines: dict[str, int | None]

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"config file {self.path}, line {line}" if line else f"config file {self.path}"


def read_config(path: str) -> ConfigFile:
    """Read a YAML/JSON config file strictly: every problem is a ValueError (FileNotFoundError for a missing
    file) naming the file, the line (and column) where known, and the fix."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config file {path}: no such file (a relative path is read from {os.getcwd()}). Check the path, or "
            "drop it and give every setting as a flag."
        ) from None
    except IsADirectoryError:
        raise ValueError(f"config file {path} is a folder; pass a .yaml, .yml or .json file.") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"config file {path}: byte {error.start} is not UTF-8 ({error.reason}); save it as UTF-8 text.") from None
    except OSError as error:
        raise ValueError(f"config file {path} cannot be read: {error.strerror or error}.") from None
    values, lines = _parse_json(path, text) if path.lower().endswith(".json") else _parse_yaml(path, text)
    if values is None:
        raise ValueError(f"config file {path} is empty: write one `flag: value` per line, e.g. `tasks: sst2,mrpc`.")
    if not isinstance(values, dict):  # a ValueError: `hf-mtl` reports those as bad input
        raise ValueError(  # noqa: TRY004
            f"config file {path}: expected a mapping of flag names to values (e.g. `tasks: sst2,mrpc` on its own line), "
            f"got {'a list' if isinstance(values, list) else type(values).__name__ + ' ' + repr(values)[:60]}."
        )
    for key in values:
        if not isinstance(key, str):
            raise ValueError(f"config file {path}, line {lines.get(key)}: key {key!r} is not a flag name; keys are "  # noqa: TRY004
                             "hf-mtl train flags without the leading --, e.g. max_steps.")
    return ConfigFile(path, values, lines)


def _parse_json(path: str, text: str) -> tuple[Any, dict]:
    def strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                found = [_line_column(text, m.start()) for m in re.finditer(rf'"{re.escape(key)}"\s*:', text)]
                on = f", at {' and '.join(found)}" if len(found) > 1 else ""
                raise ValueError(f"config file {path}: key {key!r} is given twice{on}; keep one (a key has one value; "
                                 "flags after the config file override it).")
            seen[key] = value
        return seen

    if not text.strip():
        return None, {}
    try:
        values = json.loads(text, object_pairs_hook=strict_object)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":
            problem = "text after the end of the JSON value; a config file holds one JSON object, remove the rest"
        else:
            problem = f"{err.msg}; fix the JSON there (keys and strings in double quotes, a comma between entries, " \
                      "none after the last)"
        raise ValueError(f"config file {path}, line {err.lineno}, column {err.colno}: not valid JSON: {problem}.") from None
    lines = {}
    if isinstance(values, dict):
        for key in values:
            match = re.search(rf'"{re.escape(key)}"\s*:', text)
            lines[key] = text.count("\n", 0, match.start()) + 1 if match else None
    return values, lines


def _line_column(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    return f"line {line}, column {position - text.rfind(chr(10), 0, position)}"


def _parse_yaml(path: str, text: str) -> tuple[Any, dict]:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key (a list): the constructor reports it
                    continue
                if first is not None:
                    raise ValueError(f"config file {path}: key {key!r} is given twice, on line {first} and line {line}; "
                                     "keep one (a key has one value; flags after the config file override it).")
                seen[key] = line
            return super().construct_mapping(node, deep)

    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        values = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(p for p in (err.context, err.problem) if p)
        raise ValueError(f"config file {path}{where}: not valid YAML: {problem}. Fix the YAML there: one "
                         "`flag: value` per line, lists as [a, b], quotes around a value holding ': ' or '#'.") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path}: not valid YAML: {err}.") from None
    finally:
        loader.dispose()
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            try:
                lines[loader.construct_object(key_node, deep=True)] = key_node.start_mark.line + 1
            except (TypeError, yaml.YAMLError):
                pass
    return values, lines


def config_to_argv(path: str) -> list[str]:
    """A YAML/JSON config file as command-line flags, so that later flags override it (read by `read_config`;
    no check against any parser: `hf-mtl bench quality` uses it for its own keys too)."""
    argv: list[str] = []
    for key, value in read_config(path).values.items():
        if isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def _is_bool_flag(action: argparse.Action) -> bool:
    from transformers.hf_argparser import string_to_bool

    return action.type is string_to_bool


def _expected(action: argparse.Action) -> str:
    if action.choices is not None:
        return "one of " + ", ".join(map(str, action.choices))
    if _is_bool_flag(action):
        return "true or false"
    return {int: "a whole number", float: "a number"}.get(action.type, "a string")


def _checked_token(config: ConfigFile, key: str, action: argparse.Action, value: Any) -> str:
    """One config value as the command-line token of `--key`, checked with the parser's own conversion."""
    where = config.where(key)
    if isinstance(value, bool) and not _is_bool_flag(action):
        raise ValueError(f"{where}: {key} is {str(value).lower()}, but --{key} takes {_expected(action)}; YAML reads "
                         "yes/no/on/off as true/false, so quote such a value (e.g. 'no').")
    if isinstance(value, dict):
        token = json.dumps(value)
    elif isinstance(value, list):
        raise ValueError(f"{where}: {key} holds a nested list {value!r}; give plain values.")  # noqa: TRY004
    elif isinstance(value, float) and not math.isfinite(value) and action.type is int:
        token = str(value)  # refused below, as int() refuses it
    else:
        token = str(value).lower() if isinstance(value, bool) else str(value)
    if callable(action.type):
        try:
            converted = action.type(token)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            default = "" if action.default in (None, argparse.SUPPRESS) else f" (the default is {action.default})"
            raise ValueError(f"{where}: {key} is {value!r}, but --{key} takes {_expected(action)}{default}. "
                             "Fix the value, or remove the line to keep the default.") from None
        if action.choices is not None and converted not in action.choices:
            raise ValueError(f"{where}: {key} is {value!r}, but --{key} takes {_expected(action)}.")
    return token


def _config_argv(config: ConfigFile, parser: argparse.ArgumentParser) -> list[str]:
    """The flags a config file stands for, each key checked against `parser` (a known flag, exact name) and
    each value against the flag's type, so that every error names the file and the line."""
    flags = parser._option_string_actions
    known = sorted(name[2:] for name in flags if name.startswith("--") and "-" not in name[2:])
    argv: list[str] = []
    seen: dict[str, str] = {}
    for key, value in config.values.items():
        action = flags.get(f"--{key}")
        if action is None or key.startswith("-") or key in ("help", "h"):
            close = difflib.get_close_matches(key.lstrip("-"), known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ValueError(f"{config.where(key)}: unknown key {key!r}; {hint}Keys are hf-mtl train flags without "
                             "the leading -- (hf-mtl train --help lists them).")
        if action.dest in seen:
            raise ValueError(f"config file {config.path}: {action.dest} is given twice, as {seen[action.dest]!r} "
                             f"({config.where(seen[action.dest]).split(', ')[-1]}) and {key!r} "
                             f"({config.where(key).split(', ')[-1]}); keep one.")
        seen[action.dest] = key
        if value is None:
            continue
        if action.nargs == 0:  # --no_<flag>: a switch
            if not isinstance(value, bool):
                raise ValueError(f"{config.where(key)}: {key} is {value!r}, but it is a switch: write {key}: true "
                                 f"(or set {action.dest} instead).")
            argv += [f"--{key}"] if value else []
            continue
        if isinstance(value, list):
            if not value:
                raise ValueError(f"{config.where(key)}: {key} is an empty list; give at least one value, or remove "
                                 "the line to keep the default.")
            tokens = [_checked_token(config, key, action, item) for item in value]
            if action.nargs in ("+", "*"):
                argv += [f"--{key}", *tokens]
            elif key in COMMA_SEPARATED_FLAGS:
                argv += [f"--{key}", ",".join(tokens)]
            else:
                raise ValueError(f"{config.where(key)}: {key} is a list {value!r}, but --{key} takes one value; "
                                 "give one.")
            continue
        argv += [f"--{key}", _checked_token(config, key, action, value)]
    return argv


def _unused_arguments(remaining: Sequence[str], argv: Sequence[str], known: Sequence[str]) -> str:
    """What is wrong with the command-line arguments no flag took: an unknown flag, or a stray value."""
    token = remaining[0]
    if token.startswith("-"):
        name = token.split("=", 1)[0].lstrip("-")
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        return f"unknown flag {token.split('=', 1)[0]}{hint}; hf-mtl train --help lists every flag."
    argv = list(argv)
    index = argv.index(token) if token in argv else -1
    start = next((i for i in range(index - 1, -1, -1) if argv[i].startswith("--")), None) if index > 0 else None
    if start is not None:
        flag, values = argv[start], argv[start + 1: index]
        joined = f"; for several, join them with commas: {flag} {','.join([*values, token])}" \
            if flag.lstrip("-") in COMMA_SEPARATED_FLAGS else "; quote a value that holds spaces"
        return f"unexpected argument {token!r} after {shlex.join([flag, *values])}: {flag} takes one value{joined}."
    return (f"unexpected argument {token!r}: hf-mtl train takes a config file (.yaml, .yml or .json) first, then "
            "--flag value pairs.")


def parse_train_args(argv: Sequence[str]) -> tuple[ModelArguments, DataArguments, MultiTaskTrainingArguments]:
    """`hf-mtl train`'s flags (after an optional leading config file) as the three argument dataclasses."""
    from transformers import HfArgumentParser

    argv = list(argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments), prog="hf-mtl train")
    file_argv: list[str] = []
    if argv and not argv[0].startswith("-"):
        if argv[0].lower().endswith(CONFIG_SUFFIXES):
            file_argv, argv = _config_argv(read_config(argv[0]), parser), argv[1:]
        elif os.path.isfile(argv[0]):
            raise ValueError(f"config file {argv[0]}: a config file's name ends in .yaml, .yml or .json; rename it.")
    *parsed, remaining = parser.parse_args_into_dataclasses(args=file_argv + argv, return_remaining_strings=True)
    if remaining:
        known = sorted(name[2:] for name in parser._option_string_actions if name.startswith("--"))
        raise ValueError(_unused_arguments(remaining, argv, known))
    return tuple(parsed)  # type: ignore[return-value]
