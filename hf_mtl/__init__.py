"""hf_mtl: multi-task fine-tuning for Hugging Face Transformers.

One shared encoder, one head per task, and a choice of how the task losses are balanced
(`MultiTaskTrainingArguments(weighting="geometric")`, or `hf-mtl train --weighting geometric`).
The public names below are imported lazily, so `import hf_mtl` stays cheap. `pipeline("multi-task",
model=RUN)` (`hf_mtl.multi_task_pipeline`) is registered with transformers when `transformers.pipelines` is
imported, before or after `import hf_mtl` (importing it here would cost seconds).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
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


_PIPELINES = "transformers.pipelines"


def _register_pipeline() -> None:
    """Import `hf_mtl.multi_task_pipeline`, which registers the pipeline as it loads (when that import is what
    brought `transformers.pipelines` in, the module is half-loaded here and registers once it finishes)."""
    try:
        importlib.import_module(f"{__name__}.multi_task_pipeline")
    except Exception:  # a failure here must not break transformers' own pipelines
        import logging

        logging.getLogger(__name__).warning('pipeline("multi-task") could not be registered', exc_info=True)


class _RegisterWhenLoaded:
    """A `sys.meta_path` finder: finds `transformers.pipelines` in its package folder once, and registers the
    pipeline after the module has run (no `importlib.abc` base: importing it would cost more than the rest)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _PIPELINES:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister:
    """The module's own loader, then the registration."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        _register_pipeline()

    def __getattr__(self, name: str) -> Any:
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


if _PIPELINES in sys.modules:
    _register_pipeline()
elif not any(isinstance(finder, _RegisterWhenLoaded) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenLoaded())
