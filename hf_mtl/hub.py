"""Access to saved runs and the Hub: loading a run (a training output folder or a Hub id), picking its
tasks, and uploading a folder to the Hub.

* `load_run(RUN)` gives the `MultiTaskModel` and tokenizer of a run folder or Hub repository;
  `run_location` refuses first, with the path and the fix, what can be neither (a missing path, a file,
  a folder without a saved model, a Hub id while offline that is not cached); `local_run_folder` is the
  same for commands that need a local folder (`hf-mtl push`); `task_spec` / `select_tasks` pick tasks
  of its config (for `hf-mtl export|evaluate|predict`).
* `upload_folder(FOLDER, REPO_ID)` creates the repository if needed and uploads the folder in one
  commit (`hf-mtl push`, `hf-mtl export --push_to_hub`).

What is built on top lives in its own module: `hf_mtl.model_card` (the cards), `hf_mtl.export`
(one task as a standard transformers model of its kind's class: sequence classification, token
classification or multiple choice) and `hf_mtl.inference` (evaluation and prediction of a saved run).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .modeling import MultiTaskConfig, MultiTaskModel, resolve_model_path
from .tasks import TaskSpec

logger = logging.getLogger(__name__)


#: What a RUN_DIR argument is, for messages.
_RUN_HINT = "the output_dir of `hf-mtl train` (the folder with config.json and model.safetensors), or a Hub id `namespace/name`"


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)  # what huggingface_hub's own is_offline_mode() returns


def _looks_like_repo_id(text: str) -> bool:
    """Whether `text` could name a Hub repository (`name` or `namespace/name`); paths such as `/a/b`, `./a` or
    `a/b/c` cannot."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return not text.startswith((".", "~"))


def _missing_model_hint(folder: Path) -> str:
    """The fix for a folder without config.json: its latest `checkpoint-N` holding a model, when there is one."""
    steps = sorted((int(match.group(1)), entry) for entry in folder.iterdir()
                   if (match := re.fullmatch(r"checkpoint-(\d+)", entry.name)) and (entry / "config.json").is_file())
    if steps:
        return (f" Its training has not finished (no final model), but its latest checkpoint holds one: {steps[-1][1]}. "
                "Pass that folder, or run the same `hf-mtl train` command again to resume and finish.")
    return f" Pass {_RUN_HINT}."


def run_location(run: str | os.PathLike[str]) -> str:
    """Where to load the run `run` from: a local folder that holds a saved model, or a Hub id to fetch.

    Refuses, with the path and the fix, a file, a folder without `config.json` (pointing at the latest
    `checkpoint-N` with a model of an unfinished run) and a path that does not exist here: offline
    (`HF_HUB_OFFLINE=1`) also a Hub id that is not in the local cache; a path that cannot be a Hub id
    (`/a/b`, `./a`, `a/b/c`) is never looked up on the Hub.
    """
    text = str(run)
    path = Path(text)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"RUN_DIR {text}: the folder has no config.json, so it holds no saved model."
                                    + _missing_model_hint(path))
        return text
    if path.exists():
        raise ValueError(f"RUN_DIR {text} is a file, not a folder. Pass {_RUN_HINT}.")
    resolved = resolve_model_path(text)
    if resolved != text:  # a model shipped as a PyPI package
        return resolved
    where = f"there is no such folder (looked for {path.absolute()})"
    if not _looks_like_repo_id(text):
        raise FileNotFoundError(f"RUN_DIR {text}: {where}, and it is not a Hub id either. Check the path; pass {_RUN_HINT}.")
    if _hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(text, "config.json"), str):
            raise FileNotFoundError(
                f"RUN_DIR {text}: {where}, and with HF_HUB_OFFLINE=1 it cannot be downloaded as a Hub repository id "
                "(it is not in the local Hugging Face cache). Check the path, or unset HF_HUB_OFFLINE to fetch "
                f"{text!r} from the Hub."
            )
    return text


def load_run(run: str | os.PathLike[str]) -> tuple[MultiTaskModel, Any]:
    """The multi-task model and tokenizer saved in `run`: a training output folder or a Hub repository id
    (see `run_location` for what is refused before anything is loaded)."""
    from transformers import AutoConfig, AutoTokenizer

    path = run_location(run)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as error:  # a Hub id the Hub does not know, no connection, an unreadable file, ...
        where = "" if Path(path).is_dir() else "not a local folder, and loading it from the Hub failed: "
        raise FileNotFoundError(f"RUN_DIR {run}: {where}{error}") from error
    if config.model_type != MultiTaskConfig.model_type:
        raise ValueError(
            f"{run} holds a {config.model_type!r} model, not an hf_mtl multi-task model. Pass the output_dir of "
            "`hf-mtl train` (or a Hub repository it pushed to); a plain encoder has no task heads to use."
        )
    try:
        return MultiTaskModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    except OSError as error:  # e.g. config.json without model.safetensors or tokenizer files
        raise FileNotFoundError(f"RUN_DIR {run}: {error}") from error


def local_run_folder(run: str | os.PathLike[str]) -> Path:
    """`run` as a local folder that holds a saved hf_mtl multi-task model (`hf-mtl push`); refuses anything else
    with the path and the fix."""
    path = Path(run)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else f"does not exist (looked for {path.absolute()})"
        raise FileNotFoundError(f"RUN_DIR {run} {what}. Pass the output_dir of `hf-mtl train` (a local folder).")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"RUN_DIR {run}: the folder has no config.json, so it holds no saved model."
                                + _missing_model_hint(path))
    model_type = _config_model_type(config)
    if model_type != MultiTaskConfig.model_type:
        raise ValueError(f"{run} holds a {model_type!r} model, not an hf_mtl multi-task model. Pass the output_dir "
                         "of `hf-mtl train`.")
    return path


def _config_model_type(config: Path) -> str | None:
    """The `model_type` of a config.json, or None when it has none or is not a JSON object."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) else None


def holds_multitask_model(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` has a config.json of an hf_mtl multi-task model (a run, one of its checkpoints)."""
    return _config_model_type(Path(folder) / "config.json") == MultiTaskConfig.model_type


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

