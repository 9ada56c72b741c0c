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
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .config_file import ConfigFile, read_config
from .lora import (
    DEFAULT_ALPHA,
    DEFAULT_DROPOUT,
    DEFAULT_R,
    DEFAULT_TARGET_MODULES,
    PEFT_METHODS,
    check_peft_installed,
    lora_settings,
)
from .modeling import DEFAULT_MODEL, DEFAULT_POOLING
from .tasks import POOLINGS
from .training_args import MultiTaskTrainingArguments

#: What a config file's name ends with (the first argument of `hf-mtl train`).
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
#: Flags that take one comma-separated string: a list in a config file is joined with commas for them.
COMMA_SEPARATED_FLAGS = ("tasks", "lora_target_modules")


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
    pooling: str = field(
        default=DEFAULT_POOLING,
        metadata={"help": "How sentence-level heads read the encoder: mean (the mean over real tokens; the default, best on "
                  "MiniLM), cls (the first token's state) or pooler (BERT's pooler output; needed to `hf-mtl export` "
                  "a sentence-level task as *ForSequenceClassification). A task file's per-task pooling overrides it. "
                  "Ignored when continuing a saved hf_mtl model (its own pooling).",
                  "choices": list(POOLINGS)},
    )

    peft: str | None = field(
        default=None,
        metadata={"help": "lora: train LoRA adapters on the shared encoder (its own weights frozen) and the task heads in "
                  "full, through the peft library (pip install 'hf_mtl[peft]'). `hf-mtl export` merges the adapter, so "
                  "an exported task needs no peft. Default: fine-tune the whole encoder.",
                  "choices": list(PEFT_METHODS)},
    )
    lora_r: int | None = field(default=None, metadata={"help": f"With --peft lora: the rank of each update (default {DEFAULT_R})."})
    lora_alpha: float | None = field(
        default=None, metadata={"help": f"With --peft lora: updates are scaled by alpha / r (default {DEFAULT_ALPHA:g})."})
    lora_dropout: float | None = field(
        default=None, metadata={"help": f"With --peft lora: dropout on the LoRA input, in [0, 1) (default {DEFAULT_DROPOUT})."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={"help": "With --peft lora: the encoder's linear layers to adapt, comma-separated names, or all-linear "
                  f"(default {','.join(DEFAULT_TARGET_MODULES)}: the attention query and value projections, as in the "
                  "LoRA paper). With --pooling pooler the pooler is trained in full, like the heads."},
    )

    def __post_init__(self) -> None:
        p = self.classifier_dropout
        if p is not None and (isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1):
            raise ValueError(f"--classifier_dropout must be a probability in [0, 1) (e.g. 0.1), or unset for the "
                             f"encoder's hidden dropout; got {p!r}.")
        given = [f"--{name}" for name in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
                 if getattr(self, name) is not None]
        if self.peft is None and given:
            raise ValueError(f"{', '.join(given)} set LoRA options, but --peft is not set; add --peft lora, or drop them.")
        if self.peft is not None and self.peft not in PEFT_METHODS:
            raise ValueError(f"--peft must be one of {', '.join(PEFT_METHODS)}, got {self.peft!r}.")
        if self.peft == "lora":
            lora_settings(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)
            check_peft_installed()


@dataclass
class DataArguments:
    """Where the data comes from and how it is cut, as in transformers' run_glue.py."""

    task_config: str | None = field(
        default=None,
        metadata={"help": "A YAML or JSON task file declaring your own tasks (name, kind, source, columns, labels, "
                  "per-task overrides) and GLUE ones (`- glue: mrpc`); instead of --tasks. See the README's 'Your own "
                  "tasks'."},
    )
    glue_dir: str | None = field(
        default=None,
        metadata={"help": "Local folder in the original GLUE layout (SST-2/train.tsv, ...). Default: $GLUE_DIR, else the Hub (nyu-mll/glue)."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated (batches are padded dynamically)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows of each task."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows of each evaluation split."})
    validation_split_percentage: float | None = field(
        default=None,
        metadata={"help": "Evaluate on a fixed random P%% of each task's training rows (after --max_train_samples), "
                  "held out from training, instead of its dev split: for choosing hyperparameters without looking at "
                  "dev (bench quality's static:tuned does). Like run_mlm.py's flag, but used even when a dev split "
                  "exists."},
    )
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
        percentage = self.validation_split_percentage
        if percentage is not None and not (isinstance(percentage, (int, float)) and 0 < percentage < 100):
            raise ValueError(f"--validation_split_percentage must be a percentage between 0 and 100 (exclusive), got "
                             f"{percentage!r}; e.g. 10 evaluates on a tenth of the training rows. Unset: the dev split.")


def _check_count(flag: str, value: Any, minimum: int, meaning: str, unset: str | None = None) -> None:
    """A ValueError naming `--flag` and `value` unless `value` is a whole number >= `minimum` (or None when
    `unset` says what leaving it unset means)."""
    if value is None and unset is not None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        fix = f", or unset ({unset})" if unset else ""
        raise ValueError(f"--{flag} must be a whole number >= {minimum} ({meaning}){fix}, got {value!r}.")


# ---- config files -----------------------------------------------------------------------------------


def _is_entry_list(value: Any) -> bool:
    """A list holding mappings (a task list with entries): one JSON flag value, not one token per item."""
    return isinstance(value, list) and any(isinstance(item, dict) for item in value)


def config_to_argv(path: str) -> list[str]:
    """A YAML/JSON config file as command-line flags, so that later flags override it (read by `read_config`;
    no check against any parser: `hf-mtl bench quality` uses it for its own keys too)."""
    argv: list[str] = []
    for key, value in read_config(path).values.items():
        if _is_entry_list(value):
            argv += [f"--{key}", json.dumps(value)]  # a task list with entries: parsed by hf_mtl.task_file
        elif isinstance(value, list):
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
        if key == "tasks" and _is_entry_list(value):
            argv += [f"--{key}", json.dumps(value)]  # a task list with entries: parsed by hf_mtl.task_file
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


def _task_file_weights(argv: Sequence[str]) -> list[str]:
    """`--task_weights` made of the `task_weight` entries of the tasks given by --task_config or a `tasks:` list
    (every task of the run, 1 for those without one), so that `--weighting static` sees them when its flags are
    checked; [] when no task has one. Given together with --task_weights, they are refused."""
    from .task_file import parse_task_list, read_task_file

    def value(flag: str) -> str | None:
        found = [argv[i + 1] for i, token in enumerate(argv[:-1]) if token == flag]
        found += [token.split("=", 1)[1] for token in argv if token.startswith(flag + "=")]
        return found[-1] if found else None

    tasks, task_config = value("--tasks"), value("--task_config")
    if task_config:
        specs = read_task_file(task_config)
    elif tasks and tasks.strip().startswith("["):
        specs = parse_task_list(tasks)
    else:
        return []
    weights = {spec.name: spec.weight for spec in specs if spec.weight is not None}
    if not weights:
        return []
    if value("--task_weights") is not None:
        raise ValueError(f"--task_weights and the task_weight entries of the tasks ({weights}) both set task weights; "
                         "give them in one place.")
    return ["--task_weights", json.dumps({spec.name: 1.0 if spec.weight is None else spec.weight for spec in specs})]


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
    argv = file_argv + argv
    argv += _task_file_weights(argv)
    *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if remaining:
        known = sorted(name[2:] for name in parser._option_string_actions if name.startswith("--"))
        raise ValueError(_unused_arguments(remaining, argv, known))
    return tuple(parsed)  # type: ignore[return-value]
