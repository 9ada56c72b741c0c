"""hf_mtl: multi-task fine-tuning for Hugging Face Transformers.

One shared encoder, one head per task, and a choice of how the task losses are balanced
(`MultiTaskTrainingArguments(weighting="geometric")`, or `hf-mtl train --weighting geometric`).
The public names below are imported lazily, so `import hf_mtl` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TaskSpec": "tasks",
    "GLUE_TASKS": "tasks",
    "get_task": "tasks",
    "parse_tasks": "tasks",
    "load_task_splits": "data",
    "prepare_dataset": "data",
    "tokenize_splits": "data",
    "label_statistics": "data",
    "LabelStatistics": "label_stats",
    "DataArguments": "arguments",
    "ModelArguments": "arguments",
    "build_datasets": "pipeline",
    "run_training": "pipeline",
    "MultiTaskConfig": "modeling",
    "resolve_model_path": "modeling",
    "MultiTaskModel": "modeling",
    "MultiTaskTrainer": "trainer",
    "MultiTaskTrainingArguments": "training_args",
    "Weighting": "weighting",
    "WEIGHTINGS": "weighting",
    "build_weighting": "weighting",
    "compute_task_metrics": "metrics",
    "glue_score": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hf_mtl' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
