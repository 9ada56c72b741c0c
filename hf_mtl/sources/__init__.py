"""Where a task's data comes from: the registry of data sources (`SOURCES`), and `load_raw_splits`.

A source reads the raw splits of one task (`train`, `validation`, `test`, as many as it has) into a
`datasets.DatasetDict`, untouched: `hf_mtl.data` then resolves the label set, validates every row and
prepares the splits. Each source also says where a split comes from (`describe`) and how to name one of
its rows (`locate`), so every error about the data names the file and the row. A task declared in a task
file carries its source as a plain dict (`TaskSpec.source`, saved in the model's config), with a `type`:

* `files` (`hf_mtl.sources.files`): local `train_file` / `validation_file` / `test_file` in csv, tsv,
  json / jsonl or parquet, read with datasets' own loaders;
* `hub` (`hf_mtl.sources.hub`): a Hub dataset id (or a local dataset folder) with optional config and
  split names, through `datasets.load_dataset`;
* `disk` (`hf_mtl.sources.disk`): a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.

GLUE tasks named by their names keep their own reader (`hf_mtl.data.load_task_splits`). A new source is one
module with a `Source` subclass plus one line in `SOURCES`.
"""

from __future__ import annotations

from typing import Any

from .base import Source
from .disk import DiskSource
from .files import FileSource
from .hub import HubSource

SOURCES: dict[str, type[Source]] = {cls.type: cls for cls in (FileSource, HubSource, DiskSource)}

#: Task-file keys that select a source, and the source they select.
SOURCE_KEYS: dict[str, str] = {key: cls.type for cls in SOURCES.values() for key in cls.selecting_keys}


def get_source(task: str, source: dict[str, Any]) -> Source:
    """The source described by a task's `source` dict (checked: a ValueError naming the task and key if not)."""
    kind = source.get("type")
    if kind not in SOURCES:
        raise ValueError(f"task {task!r}: source type {kind!r} is not one of {', '.join(SOURCES)}.")
    return SOURCES[kind](task, source)


__all__ = ["SOURCES", "SOURCE_KEYS", "Source", "get_source"]
