"""Tasks declared in a task file (or the `tasks:` list of a train config): your own data beside GLUE.

A task list is a list whose items are GLUE names (`sst2`), GLUE entries with overrides (`{glue: mrpc,
max_train_samples: 1000}`) or task entries:

```yaml
- name: ner                      # used in flags, heads and logged keys (eval_ner_f1)
  kind: token_classification     # classification | regression | multi_label | token_classification | multiple_choice
  train_file: data/ner/train.jsonl      # a source: train_file / validation_file / test_file (csv, tsv, json,
  validation_file: data/ner/dev.jsonl   # jsonl, parquet), or dataset: HUB_ID (+ dataset_config, *_split),
                                        # or load_from_disk: FOLDER
  tokens_column: tokens          # columns, by kind: text_columns (one or two) | tokens_column + tags_column |
  tags_column: ner_tags          # context_column + choices_column (a list) or choice_columns; label_column
  label_names: [O, B-PER, I-PER] # optional: else a ClassLabel feature's names, else the sorted training labels
  metrics: [accuracy, seqeval]   # optional: built-in names or evaluate modules (a local path works offline)
  pooling: mean                  # optional per-task overrides: pooling, max_seq_length, max_train_samples,
  task_weight: 2.0               # max_eval_samples, num_labels, label_range, task_weight (its --task_weights entry),
  oversample: 2.0                # oversample (a factor on the task's share of the rows or its draw probability)
```

`read_task_file(path)` reads a YAML / JSON file holding such a list (or a mapping with a `tasks:` list);
`parse_task_list(value)` takes `--tasks` as given (comma-separated names, a JSON list, a list). Every
problem is a ValueError naming the task (its position), the key, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .kinds import KINDS
from .sources import SOURCE_KEYS, SOURCES
from .tasks import POOLINGS, TaskSpec, get_task, parse_tasks

#: Per-task keys that override the run's flag of the same name (or add to it: task_weight).
OVERRIDES = ("max_seq_length", "max_train_samples", "max_eval_samples", "pooling", "metrics", "task_weight",
             "oversample")
#: Column keys, by kind.
COLUMN_KEYS = ("text_columns", "text_column", "tokens_column", "tags_column", "context_column", "choices_column",
               "choice_columns", "label_column")
LABEL_KEYS = ("label_names", "num_labels", "label_range")
ENTRY_KEYS = tuple(dict.fromkeys(("name", "kind", "glue", *COLUMN_KEYS, *LABEL_KEYS, *OVERRIDES,
                                   *(key for cls in SOURCES.values() for key in cls.keys))))  # hub and disk share *_split


def parse_task_list(value: str | Sequence[Any]) -> list[TaskSpec]:
    """`--tasks` as given: `"sst2,mrpc"`, a JSON list (`'[{"glue": "mrpc"}, {"name": ...}]'`), or a list of
    names, entries (dicts) and `TaskSpec`s. Duplicated names and an empty list are refused."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"--tasks: {value[:80]!r} starts like a JSON list but is not valid JSON ({error.msg}, "
                             f"column {error.colno}). Give comma-separated GLUE names, or a task file with "
                             "--task_config FILE.") from None
    if isinstance(value, str):
        return parse_tasks(value)
    specs = [task_from_entry(item, index) for index, item in enumerate(value)]
    return parse_tasks(specs)


def read_task_file(path: str | os.PathLike[str]) -> list[TaskSpec]:
    """The tasks of a YAML or JSON task file: a list of entries, or a mapping with a `tasks:` list."""
    from .config_file import read_config_value

    data = read_config_value(str(path), what="task file")
    if isinstance(data, Mapping):
        extra = sorted(set(data) - {"tasks"})
        if "tasks" not in data or extra:
            raise ValueError(f"task file {path}: expected a list of tasks, or a mapping with just a `tasks:` list; "
                             f"got the keys {sorted(data)}.")
        data = data["tasks"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"task file {path}: expected a non-empty list of tasks (`- name: ...` items), got "
                         f"{type(data).__name__}.")
    try:
        return parse_task_list(data)
    except ValueError as error:
        raise ValueError(f"task file {path}: {error}") from None


def task_from_entry(item: Any, index: int = 0) -> TaskSpec:
    """One item of a task list as a `TaskSpec` (its label set may be left to the data: `num_labels=None`)."""
    if isinstance(item, TaskSpec):
        return item
    if isinstance(item, str):
        return get_task(item)
    where = f"tasks[{index}]"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where} is {item!r}; give a GLUE name, {{glue: NAME}} or a task entry with name, kind and "  # noqa: TRY004
                         "a source (train_file, dataset or load_from_disk).")
    entry = dict(item)
    name = entry.get("name", entry.get("glue"))
    where = f"{where} ({name!r})" if name else where
    unknown = [key for key in entry if key not in ENTRY_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), ENTRY_KEYS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"{where}: unknown key {unknown[0]!r}{hint}. A task entry takes {', '.join(ENTRY_KEYS)}.")
    try:
        if "glue" in entry:
            return _glue_entry(entry)
        return _own_entry(entry)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def _overrides(entry: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in OVERRIDES:
        if entry.get(key) is None:
            continue
        value = entry[key]
        if key == "metrics":
            value = tuple([value] if isinstance(value, str) else value)
            if not value or not all(isinstance(m, str) and m for m in value):
                raise ValueError(f"metrics={entry[key]!r} must be a list of metric names or evaluate module paths.")
        elif key == "pooling" and value not in POOLINGS:
            raise ValueError(f"pooling={value!r} is not one of {', '.join(POOLINGS)}.")
        elif key == "task_weight":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"task_weight={value!r} must be a number > 0 (its --task_weights entry, for "
                                 "--weighting static).")
            key, value = "weight", float(value)
        values[key] = value
    return values


def _glue_entry(entry: Mapping[str, Any]) -> TaskSpec:
    extra = sorted(set(entry) - {"glue", *OVERRIDES})
    if extra:
        raise ValueError(f"a GLUE entry takes glue: NAME and the overrides {', '.join(OVERRIDES)}; {extra} describe "
                         "your own task: give it a name, a kind and a source instead of glue:.")
    spec = get_task(str(entry["glue"]))
    return dataclasses.replace(spec, **_overrides(entry))


def _own_entry(entry: Mapping[str, Any]) -> TaskSpec:
    if "name" not in entry:
        raise ValueError("a task entry needs name: (letters, digits, _ or -), or glue: NAME for a GLUE task.")
    kind = entry.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind={kind!r}: give one of {', '.join(KINDS)}.")
    chosen = sorted({SOURCE_KEYS[key] for key in entry if key in SOURCE_KEYS})
    if len(chosen) != 1:
        found = [key for key in entry if key in SOURCE_KEYS]
        problem = f"it has {found}, which name {len(chosen)} sources" if chosen else "it has no source"
        raise ValueError(f"{problem}; give exactly one: train_file / validation_file / test_file (csv, tsv, json, jsonl, "
                         "parquet), dataset: HUB_ID (+ dataset_config), or load_from_disk: FOLDER.")
    source_type = chosen[0]
    source = {"type": source_type, **{k: v for k, v in entry.items() if k in SOURCES[source_type].keys}}
    stray = [key for key in entry if key in SOURCE_KEYS or any(key in c.keys for c in SOURCES.values())]
    stray = [key for key in stray if key not in SOURCES[source_type].keys]
    if stray:
        raise ValueError(f"{stray} do not apply to a {source_type} source (keys: {', '.join(SOURCES[source_type].keys)}).")
    text_columns, label_column = _columns(kind, entry)
    names = entry.get("label_names")
    if names is not None and (not isinstance(names, list) or not all(
            isinstance(n, (str, int)) and not isinstance(n, bool) for n in names)):
        raise ValueError(f"label_names={names!r} must be a list of label names, e.g. [negative, positive].")
    spec = TaskSpec(
        name=str(entry["name"]),
        kind=kind,
        num_labels=entry.get("num_labels"),
        text_columns=text_columns,
        label_column=label_column,
        label_names=tuple(entry["label_names"]) if entry.get("label_names") is not None else None,
        label_range=tuple(entry["label_range"]) if entry.get("label_range") is not None else None,
        eval_splits=("validation",),
        source=source,
        **_overrides(entry),
    )
    SOURCES[source_type](spec.name, source)  # checks the source's own keys now, before any data is read
    return spec


def _columns(kind: str, entry: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """The entry's column keys as `text_columns` and `label_column`, the keys that fit its kind only."""
    allowed = {
        "token_classification": {"tokens_column", "tags_column"},
        "multiple_choice": {"context_column", "choices_column", "choice_columns", "label_column"},
    }.get(kind, {"text_columns", "text_column", "label_column"})
    wrong = [key for key in COLUMN_KEYS if key in entry and key not in allowed]
    if wrong:
        raise ValueError(f"{wrong} do not apply to a {kind} task; its column keys are {', '.join(sorted(allowed))}.")

    def column(key: str, default: str) -> str:
        value = entry.get(key, default)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}={value!r} must be a column name.")
        return value

    if kind == "token_classification":
        return (column("tokens_column", "tokens"),), column("tags_column", "tags")
    if kind == "multiple_choice":
        context = column("context_column", "context")
        if "choices_column" in entry and "choice_columns" in entry:
            raise ValueError("give choices_column (one list column) or choice_columns (one column per choice), not both.")
        if "choice_columns" in entry:
            choices = entry["choice_columns"]
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
                raise ValueError(f"choice_columns={choices!r} must list at least 2 column names.")
            return (context, *choices), column("label_column", "label")
        return (context, column("choices_column", "choices")), column("label_column", "label")
    if "text_columns" in entry and "text_column" in entry:
        raise ValueError("give text_columns (a list) or text_column, not both.")
    texts = entry.get("text_columns", entry.get("text_column", ["text"]))
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not 1 <= len(texts) <= 2 or not all(isinstance(c, str) and c for c in texts):
        raise ValueError(f"text_columns={texts!r} must list one column (single text) or two (a text pair).")
    return tuple(texts), column("label_column", "label")
