"""Access to saved runs and the Hub: loading a run (a training output folder or a Hub id), picking its
tasks, and uploading a folder to the Hub.

* `load_run(RUN)` gives the `MultiTaskModel` and tokenizer of a run folder or Hub repository;
  `task_spec` / `select_tasks` pick tasks of its config (for `hf-mtl export|evaluate|predict`).
* `upload_folder(FOLDER, REPO_ID)` creates the repository if needed and uploads the folder in one
  commit (`hf-mtl push`, `hf-mtl export --push_to_hub`).

What is built on top lives in its own module: `hf_mtl.model_card` (the cards), `hf_mtl.export`
(one task as a standard `AutoModelForSequenceClassification`) and `hf_mtl.inference` (evaluation and
prediction of a saved run).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from .modeling import MultiTaskConfig, MultiTaskModel, resolve_model_path
from .tasks import TaskSpec

logger = logging.getLogger(__name__)


def load_run(run: str | os.PathLike[str]) -> tuple[MultiTaskModel, Any]:
    """The multi-task model and tokenizer saved in `run`: a training output folder or a Hub repository id."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(str(run))
    config = AutoConfig.from_pretrained(path)
    if config.model_type != MultiTaskConfig.model_type:
        raise ValueError(
            f"{run} holds a {config.model_type!r} model, not an hf_mtl multi-task model. Pass the output_dir of "
            "`hf-mtl train` (or a Hub repository it pushed to); a plain encoder has no task heads to use."
        )
    return MultiTaskModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def task_spec(config: MultiTaskConfig, task: str) -> TaskSpec:
    """The `TaskSpec` of task `task` of a loaded model's config; refuses a task the model does not have."""
    specs = {spec.name: spec for spec in config.task_specs}
    if task not in specs:
        raise ValueError(f"--task {task!r} is not a task of this model; its tasks are {list(specs)}.")
    return specs[task]


def select_tasks(config: MultiTaskConfig, tasks: str | Sequence[str] | None) -> list[TaskSpec]:
    """The specs of `tasks` (names, or one comma-separated string such as `--tasks`); None: every task."""
    if tasks is None:
        return config.task_specs
    names = [t.strip() for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)
    return [task_spec(config, name) for name in names]


def upload_folder(folder: str | os.PathLike[str], repo_id: str, token: str | None = None, private: bool | None = None,
                  commit_message: str = "Upload with hf_mtl", ignore_patterns: Sequence[str] = ()) -> str:
    """Create `repo_id` (if needed) and upload `folder` in one commit; returns the repository id."""
    from huggingface_hub import HfApi

    api = HfApi()
    repo = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), commit_message=commit_message, token=token,
                      ignore_patterns=list(ignore_patterns) or None)
    logger.info("Uploaded %s to %s", folder, repo.repo_id)
    return repo.repo_id

