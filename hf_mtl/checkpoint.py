"""What a checkpoint holds beyond the Trainer's own files, and which checkpoint a run resumes from.

The weighting's state is written next to every Trainer checkpoint: its JSON-serialisable values in
`weighting_state.json`, its tensors (EMA buffers, learned values) in `weighting_state.safetensors`;
never a pickle. The JSON is written last, so its presence marks a complete checkpoint: a run killed
while saving leaves a folder without it, and `last_complete_checkpoint` skips that folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from .weighting import Weighting

logger = logging.getLogger(__name__)

WEIGHTING_STATE_FILE = "weighting_state.json"
WEIGHTING_TENSORS_FILE = "weighting_state.safetensors"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def save_weighting_state(weighting: Weighting, folder: str, engine_state: Mapping[str, Any] | None = None) -> None:
    """The strategy's state as JSON, its tensors (EMA buffers, learned values) as safetensors: no pickle.

    Both files are written to a temporary name and renamed, the JSON last: a checkpoint folder holding
    `weighting_state.json` is complete (see `last_complete_checkpoint`). `engine_state` (the step
    engine's fault counters) is kept next to the strategy's state.
    """
    tensors: dict[str, torch.Tensor] = {}

    def split(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(value, Mapping):
            return {k: split(v, f"{key}.{k}") for k, v in value.items()}
        return value

    state = split(weighting.state_dict(), "state")
    if tensors:
        from safetensors.torch import save_file

        save_file(tensors, os.path.join(folder, WEIGHTING_TENSORS_FILE + ".tmp"))
        os.replace(os.path.join(folder, WEIGHTING_TENSORS_FILE + ".tmp"), os.path.join(folder, WEIGHTING_TENSORS_FILE))
    saved: dict[str, Any] = {"name": weighting.name, "state": state}
    if engine_state is not None:
        saved["engine"] = dict(engine_state)
    with open(os.path.join(folder, WEIGHTING_STATE_FILE + ".tmp"), "w") as f:
        json.dump(saved, f, indent=2)
    os.replace(os.path.join(folder, WEIGHTING_STATE_FILE + ".tmp"), os.path.join(folder, WEIGHTING_STATE_FILE))


def load_weighting_state(weighting: Weighting, folder: str) -> bool:
    """Restore what `save_weighting_state` wrote; False if the folder holds no weighting state."""
    path = os.path.join(folder, WEIGHTING_STATE_FILE)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        saved = json.load(f)
    if saved["name"] != weighting.name:
        raise ValueError(
            f"resume_from_checkpoint: {folder} was trained with --weighting {saved['name']}, "
            f"not {weighting.name}; resume with the same weighting."
        )
    tensors: dict[str, torch.Tensor] = {}
    if os.path.exists(os.path.join(folder, WEIGHTING_TENSORS_FILE)):
        from safetensors.torch import load_file

        tensors = load_file(os.path.join(folder, WEIGHTING_TENSORS_FILE))

    def join(value: Any) -> Any:
        if isinstance(value, Mapping):
            return tensors[value["__tensor__"]] if set(value) == {"__tensor__"} else {k: join(v) for k, v in value.items()}
        return value

    weighting.load_state_dict(join(saved["state"]))
    return True


def load_engine_state(folder: str) -> dict[str, Any]:
    """The step engine's counters saved by `save_weighting_state` ({} when the folder has none)."""
    path = os.path.join(folder, WEIGHTING_STATE_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return dict(json.load(f).get("engine") or {})


def is_complete_checkpoint(folder: str) -> bool:
    """A checkpoint the Trainer finished writing (`trainer_state.json`) whose weighting state, written
    after everything else, is there too. A run killed while saving leaves a folder without it."""
    return os.path.isfile(os.path.join(folder, "trainer_state.json")) and os.path.isfile(
        os.path.join(folder, WEIGHTING_STATE_FILE))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The `checkpoint-N` folder of `output_dir` with the largest N that is complete, or None.

    Like `transformers.trainer_utils.get_last_checkpoint`, but a folder a crash left half-written is
    skipped (with a warning) instead of being resumed from.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name))
                    and os.path.isdir(os.path.join(output_dir, name))), reverse=True)
    for _, name in steps:
        folder = os.path.join(output_dir, name)
        if is_complete_checkpoint(folder):
            return folder
        logger.warning("Skipping %s: it is incomplete (a run stopped while writing it); not resuming from it.", folder)
    return None
