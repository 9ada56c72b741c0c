"""What a checkpoint holds beyond the Trainer's own files, and which checkpoint a run resumes from.

The weighting's state is written next to every Trainer checkpoint: its JSON-serialisable values in
`weighting_state.json`, its tensors (EMA buffers, learned values) in `weighting_state.safetensors`;
never a pickle. The JSON is written last, so its presence marks a complete checkpoint: a run killed
while saving leaves a folder without it, and `last_complete_checkpoint` skips that folder.

A complete checkpoint can still be damaged (a full disk, a copy cut short): `checkpoint_damage` checks,
cheaply (headers and zip directories, never the data), every file a resume reads, and
`last_complete_checkpoint` skips a damaged one with a warning that names the file. A weighting state
is validated on load against the fresh strategy's own `state_dict()` (every number finite, the same
structure, tensor shapes and task names), with errors that name the file, the key and the fix.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
import zipfile
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


class _BadValue(Exception):
    """One value of a saved state that does not fit: where (`key`), what is wrong, and the fix if specific."""

    def __init__(self, key: str, problem: str, fix: str | None = None, tensor: bool = False) -> None:
        super().__init__(f"{key} {problem}")
        self.key, self.problem, self.fix, self.tensor = key, problem, fix, tensor


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _check_state(value: Any, template: Any, key: str, tasks: list[str]) -> None:
    """Raise `_BadValue` at the first value of `value` (a saved state) that does not fit `template` (the
    fresh strategy's `state_dict()`, None where unknown): a non-finite number anywhere, another type, a
    tensor of another shape, a missing key, a per-task mapping for other tasks, a negative count."""
    if isinstance(value, torch.Tensor):
        if template is not None and not isinstance(template, torch.Tensor):
            raise _BadValue(key, f"is {_describe(value)}, expected {_describe(template)}", tensor=True)
        if isinstance(template, torch.Tensor) and tuple(value.shape) != tuple(template.shape):
            raise _BadValue(key, f"has shape {tuple(value.shape)}, expected {tuple(template.shape)}",
                            "resume with the same model and --tasks", tensor=True)
        if value.is_floating_point() or value.is_complex():
            bad = (~torch.isfinite(value)).nonzero()
            if len(bad):
                index = tuple(bad[0].tolist())
                raise _BadValue(key, f"holds {len(bad)} non-finite value(s) (the first, {value[index].item()}, at index "
                                f"{list(index)}), expected finite numbers", tensor=True)
        return
    shown = repr(value) if isinstance(value, int | float | str) else _describe(value)
    mismatch = _BadValue(key, f"is {shown}, expected {_describe(template)}")
    if isinstance(value, bool) or value is None or isinstance(template, bool):
        if template is not None and type(value) is not type(template):
            raise mismatch
        return
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _BadValue(key, f"is {value}, expected a finite number")
        if template is not None and not isinstance(template, int | float):
            raise mismatch
        if isinstance(template, int) and not isinstance(value, int):
            raise _BadValue(key, f"is {value!r}, expected a whole number")
        if isinstance(template, int) and template >= 0 and value < 0:
            raise _BadValue(key, f"is {value}, expected a count >= 0")
        return
    if isinstance(value, str):
        if template is not None and not isinstance(template, str):
            raise mismatch
        return
    if isinstance(value, Mapping):
        if template is not None and not isinstance(template, Mapping):
            raise mismatch
        if template is not None:
            if tasks and set(template) == set(tasks) and set(value) != set(tasks):
                raise _BadValue(key, f"holds values for tasks {sorted(value)}, but this run trains {tasks}",
                                f"resume with the same --tasks ({','.join(str(k) for k in value)})")
            missing = [k for k in template if k not in value]
            if missing:
                raise _BadValue(key, f"has no key {missing[0]!r} (it has {sorted(value)})")
        for k, v in value.items():
            _check_state(v, template.get(k) if template is not None else None, f"{key}.{k}", tasks)
        return
    if isinstance(value, list):
        if template is not None and not isinstance(template, list | tuple):
            raise mismatch
        element = template[0] if template else None
        for i, v in enumerate(value):
            _check_state(v, element, f"{key}[{i}]", tasks)
        return
    if template is not None:
        raise mismatch


def _json_line(text: str, key: str) -> int | None:
    """Best effort: the line of `text` (indented JSON) holding `key` (`state.window_means[1].sst2`)."""
    position = 0
    skip = 0
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if token.startswith("["):
            skip = int(token[1:-1])
            continue
        for _ in range(skip + 1):
            position = text.find(json.dumps(token) + ":", position)
            if position < 0:
                return None
            position += 1
        skip = 0
    return text.count("\n", 0, position) + 1


def _read_json(path: str) -> tuple[Any, str]:
    """The parsed file and its text, or a ValueError naming the file, the line and what is wrong."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"{path} is empty ({os.path.getsize(path)} bytes): it was cut short")
    try:
        return json.loads(text), text
    except json.JSONDecodeError as err:
        cut = " (the file ends there: it was cut short)" if err.pos >= len(text.rstrip()) else ""
        raise ValueError(f"{path}, line {err.lineno}, column {err.colno}: not valid JSON: {err.msg}{cut}") from None


def _checkpoint_step(folder: str) -> int | None:
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(folder)))
    return int(match.group(1)) if match else None


def _checkpoints(output_dir: str) -> list[str]:
    """The `checkpoint-N` folders of `output_dir`, largest N first."""
    if not os.path.isdir(output_dir):
        return []
    steps = sorted(((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name))
                    and os.path.isdir(os.path.join(output_dir, name))), reverse=True)
    return [os.path.join(output_dir, name) for _, name in steps]


def intact_checkpoint_before(folder: str, or_after: bool = False) -> str | None:
    """The newest complete, undamaged checkpoint next to `folder` with a smaller step (any other one when
    `folder` is not named `checkpoint-N`, or with `or_after` when there is no earlier one), or None.
    Quiet: no warnings, no errors."""
    step = _checkpoint_step(folder)
    others = [other for other in _checkpoints(os.path.dirname(os.path.abspath(folder)))
              if os.path.abspath(other) != os.path.abspath(folder)]
    if step is not None:
        earlier = [other for other in others if (_checkpoint_step(other) or 0) < step]
        others = earlier + [other for other in others if other not in earlier] if or_after else earlier
    for other in others:
        if is_complete_checkpoint(other) and checkpoint_damage(other) is None:
            return other
    return None


def _fallback(folder: str) -> str:
    """What to do instead of resuming from `folder`: the earlier intact checkpoint, or start over."""
    earlier = intact_checkpoint_before(folder)
    if earlier is not None:
        return f"resume from the earlier {earlier} (--resume_from_checkpoint {earlier}), or delete {folder}"
    return f"delete {folder} to start over (there is no earlier intact checkpoint next to it)"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def load_weighting_state(weighting: Weighting, folder: str) -> bool:
    """Restore what `save_weighting_state` wrote; False if the folder holds no weighting state.

    The saved state is checked against the strategy's own fresh `state_dict()` first (every number finite,
    the same keys and types, tensor shapes, the task names); a value that does not fit is a ValueError
    naming the file, the line where it can, the key and the fix.
    """
    path = os.path.join(folder, WEIGHTING_STATE_FILE)
    if not os.path.exists(path):
        return False
    saved, text = _read_json(path)
    expected = {"name": "a strategy name", "state": "a mapping"}
    missing = [k for k, kind in (("name", str), ("state", Mapping)) if not isinstance(saved, Mapping)
               or not isinstance(saved.get(k), kind)]
    if missing:
        raise ValueError(f"{path} has no {missing[0]!r} ({expected[missing[0]]}) at its top level: it is not a weighting "
                         f"state this version wrote; {_fallback(folder)}.")
    if saved["name"] != weighting.name:
        raise ValueError(
            f"resume_from_checkpoint: {folder} was trained with --weighting {saved['name']}, "
            f"not {weighting.name}; resume with the same weighting."
        )
    tensors_path = os.path.join(folder, WEIGHTING_TENSORS_FILE)
    tensors: dict[str, torch.Tensor] = {}
    if os.path.exists(tensors_path):
        problem = _safetensors_problem(tensors_path)
        if problem:
            raise ValueError(f"{problem}; {_fallback(folder)}.")
        from safetensors.torch import load_file

        tensors = load_file(tensors_path)

    def join(value: Any, key: str) -> Any:
        if isinstance(value, Mapping):
            if set(value) == {"__tensor__"}:
                if value["__tensor__"] not in tensors:
                    found = f"{tensors_path} has only {sorted(tensors)}" if tensors else f"there is no {tensors_path}"
                    raise ValueError(f"{path}: {key} refers to tensor {value['__tensor__']!r}, but {found}; "
                                     f"{_fallback(folder)}.")
                return tensors[value["__tensor__"]]
            return {k: join(v, f"{key}.{k}") for k, v in value.items()}
        return value

    state = join(saved["state"], "state")
    try:
        _check_state(state, weighting.state_dict(), "state", list(weighting.task_names))
    except _BadValue as bad:
        line = None if bad.tensor else _json_line(text, bad.key)
        where = f"{tensors_path}: tensor" if bad.tensor else f"{path}{f', line {line}' if line else ''}: key"
        what = "does not fit this run" if bad.fix else "is corrupt"
        raise ValueError(f"{where} {bad.key} {bad.problem}; the saved --weighting {weighting.name} state {what}. "
                         f"{_sentence(bad.fix or _fallback(folder))}.") from None
    try:
        weighting.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        what = f"has no key {err}" if isinstance(err, KeyError) else f"does not fit this run: {str(err).rstrip('.')}"
        raise ValueError(f"{path}: the saved --weighting {weighting.name} state {what}. If that cannot be fixed, "
                         f"{_fallback(folder)}.") from err
    return True


def load_engine_state(folder: str, expected: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The step engine's counters saved by `save_weighting_state` ({} when the folder has none). With
    `expected` (the engine's fresh `state_dict()`), checked against it like the weighting state."""
    path = os.path.join(folder, WEIGHTING_STATE_FILE)
    if not os.path.exists(path):
        return {}
    saved, text = _read_json(path)
    engine = saved.get("engine") if isinstance(saved, Mapping) else None
    if engine is None:
        return {}
    if expected is not None:
        try:
            _check_state(engine, dict(expected), "engine", list(expected.get("skipped_tasks") or []))
        except _BadValue as bad:
            line = _json_line(text, bad.key)
            what = "do not fit this run" if bad.fix else "are corrupt"
            raise ValueError(f"{path}{f', line {line}' if line else ''}: key {bad.key} {bad.problem}; the saved fault "
                             f"counters {what}. {_sentence(bad.fix or _fallback(folder))}.") from None
    return dict(engine)


# Damage: cheap checks of every file a resume reads -------------------------------------------------------


def _safetensors_problem(path: str) -> str | None:
    """A safetensors file's 8-byte header length and JSON header must declare exactly the file's size."""
    size = os.path.getsize(path)
    if size == 0:
        return f"{path} is empty (0 bytes)"
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            return f"{path} is truncated: {size} bytes, shorter than a safetensors header"
        length = int.from_bytes(first, "little")
        if 8 + length > size:
            return f"{path} is truncated: its header alone declares {8 + length} bytes, the file holds {size}"
        try:
            header = json.loads(f.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return f"{path} is damaged: its header is not a valid safetensors header"
    if 8 + length + end != size:
        state = "truncated" if 8 + length + end > size else "damaged"
        return f"{path} is {state}: its header declares {8 + length + end} bytes, the file holds {size}"
    return None


def _torch_file_problem(path: str) -> str | None:
    """A `torch.save` file is a zip archive: its central directory, at the very end, must be there."""
    size = os.path.getsize(path)
    if size == 0:
        return f"{path} is empty (0 bytes)"
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        return None  # torch's legacy (non-zip) format: no cheap check
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        return f"{path} is truncated or damaged: not a complete torch archive ({err}; {size} bytes)"
    return None


def _json_problem(path: str, required: tuple[str, ...] = ()) -> str | None:
    try:
        value, _ = _read_json(path)
    except ValueError as err:
        return str(err)
    if not isinstance(value, Mapping):
        return f"{path} is damaged: it holds {_describe(value)}, not a JSON object"
    missing = [k for k in required if k not in value]
    return f"{path} is damaged: it has no key {missing[0]!r}" if missing else None


def checkpoint_damage(folder: str) -> str | None:
    """What is damaged in checkpoint `folder` (the file and what is wrong with it), or None.

    Cheap: headers and zip directories only, never the data. Checked: `trainer_state.json`,
    `config.json`, `weighting_state.json` (must parse; the weighting state needs `name` and `state`),
    every `*.safetensors` (the header's declared size must be the file's) and the shards a
    `*.index.json` lists, and the `torch.save` files the Trainer loads on resume (`optimizer.pt`,
    `scheduler.pt`, `scaler.pt`, `rng_state*.pth`, `pytorch_model*.bin`: their zip directory).
    """
    problem = _json_problem(os.path.join(folder, "trainer_state.json"))
    if problem is None:
        problem = _json_problem(os.path.join(folder, WEIGHTING_STATE_FILE), ("name", "state"))
    if problem is not None:
        return problem
    config = os.path.join(folder, "config.json")
    if os.path.isfile(config) and (problem := _json_problem(config)):
        return problem
    for index in sorted(glob.glob(os.path.join(folder, "*.index.json"))):
        if problem := _json_problem(index, ("weight_map",)):
            return problem
        shards = sorted(set(_load_json_quietly(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
        if missing:
            return f"{os.path.join(folder, missing[0])} is missing (listed in {index})"
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        if problem := _safetensors_problem(path):
            return problem
    torch_files = [os.path.join(folder, name) for name in ("optimizer.pt", "scheduler.pt", "scaler.pt")]
    torch_files += sorted(glob.glob(os.path.join(folder, "rng_state*.pth")))
    torch_files += sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin")))
    for path in torch_files:
        if os.path.isfile(path) and (problem := _torch_file_problem(path)):
            return problem
    return None


def _load_json_quietly(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def is_complete_checkpoint(folder: str) -> bool:
    """A checkpoint the Trainer finished writing (`trainer_state.json`) whose weighting state, written
    after everything else, is there too. A run killed while saving leaves a folder without it."""
    return os.path.isfile(os.path.join(folder, "trainer_state.json")) and os.path.isfile(
        os.path.join(folder, WEIGHTING_STATE_FILE))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The `checkpoint-N` folder of `output_dir` with the largest N that is complete and intact, or None.

    Like `transformers.trainer_utils.get_last_checkpoint`, but a folder a crash left half-written is
    skipped (with a warning) instead of being resumed from, and so is a damaged one (a truncated or
    unreadable file, see `checkpoint_damage`; the warning names the file). When every checkpoint is
    incomplete this is None (nothing to lose: a run starts over); when none is intact but some are
    damaged it is a ValueError naming them: starting over would overwrite them.
    """
    damaged: list[str] = []
    for folder in _checkpoints(output_dir):
        if not is_complete_checkpoint(folder):
            logger.warning("Skipping %s: it is incomplete (a run stopped while writing it); not resuming from it.", folder)
            continue
        problem = checkpoint_damage(folder)
        if problem is None:
            return folder
        damaged.append(problem)
        logger.warning("Skipping %s: %s. Not resuming from it (restore that file to use it again); "
                       "trying the checkpoint before it.", folder, problem)
    if damaged:
        raise ValueError(
            f"{output_dir}: no intact checkpoint to resume from; every complete one is damaged: {'; '.join(damaged)}. "
            "Starting over would overwrite them: restore those files, or delete the damaged checkpoint folders "
            "to start over, or train into another --output_dir."
        )
    return None
