"""`MultiTaskTrainingArguments`: the Trainer's arguments plus the multi-task settings.

The config half of the config/trainer pair (`MultiTaskTrainer` in `hf_mtl.trainer`), as in TRL:
every field is a `hf-mtl train` flag and a key of a YAML/JSON config file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from transformers import TrainingArguments

from .engine import NAN_POLICIES, check_nan_policy
from .weighting import WEIGHTINGS, check_weighting, hparams_dataclass

logger = logging.getLogger(__name__)


@dataclass
class _TasksAndWeighting:
    """The tasks and the strategy: their own base so that --help lists them before the strategy flags."""

    tasks: str | None = field(
        default=None,
        metadata={"help": "Comma-separated task names, e.g. sst2,mrpc,stsb (GLUE: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)."},
    )
    weighting: str = field(
        default="equal",
        metadata={"help": "How task losses are combined; `hf-mtl weightings` lists the strategies: " + ", ".join(WEIGHTINGS)},
    )


#: One field per strategy flag (--gamma, --task_weights, --norm_scope, ...), derived by the registry from
#: the strategies' own `Config` declarations (hf_mtl/weighting/<strategy>.py): a new knob is one edit there.
WeightingHyperparameters = hparams_dataclass("WeightingHyperparameters", __name__)


@dataclass
class MultiTaskTrainingArguments(WeightingHyperparameters, _TasksAndWeighting, TrainingArguments):
    """`TrainingArguments` plus the multi-task settings: the tasks, the weighting strategy and its
    hyperparameters (the fields of `WeightingHyperparameters`, declared by the strategies), the fault
    policy and checkpoint-on-signal."""

    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every N optimizer steps (per-task losses and weights included); default 10, not 500."},
    )
    nan_policy: str = field(
        default="raise",
        metadata={
            "help": "What a non-finite task loss or gradient does: `raise` (FloatingPointError naming the task, step "
            "and training rows), `skip_step` (no parameter update this step) or `skip_task` (that task contributes "
            "nothing this step). Skips are counted and logged as nan_skipped_steps / nan_skipped_<task>.",
            "choices": list(NAN_POLICIES),
        },
    )
    checkpoint_on_signal: bool = field(
        default=True,
        metadata={
            "help": "On SIGTERM or SIGINT during training, finish the current optimizer step, save a checkpoint "
            "(weighting state included) and stop; rerun to resume. A second signal stops at once."
        },
    )

    def __post_init__(self) -> None:
        _use_cpu_without_accelerator(self)
        super().__post_init__()
        # The strategy name and the hyperparameters it uses are checked here, once (by their declarations).
        for message in check_weighting(self.weighting, self.weighting_hparams()):
            logger.warning(message)
        check_nan_policy(self.nan_policy)
        if self.enable_jit_checkpoint and self.checkpoint_on_signal:
            # The Trainer's JIT checkpoint saves mid-step and without the weighting state; ours supersedes it.
            logger.warning("--enable_jit_checkpoint is replaced by hf_mtl's --checkpoint_on_signal (a checkpoint at the "
                           "end of the current step, weighting state included); turning enable_jit_checkpoint off.")
            self.enable_jit_checkpoint = False

    def weighting_hparams(self) -> dict[str, Any]:
        """Every strategy flag and its value, {flag: value}: what `build_weighting(..., hparams=...)` takes."""
        return {f.name: getattr(self, f.name) for f in fields(WeightingHyperparameters)}


_shadowed = {f.name for f in fields(WeightingHyperparameters)} & (
    {f.name for f in fields(TrainingArguments)} | {f.name for f in fields(_TasksAndWeighting)}
    | set(MultiTaskTrainingArguments.__annotations__)
)
if _shadowed:
    raise TypeError(f"weighting flag(s) {', '.join(sorted(_shadowed))} clash with other training arguments; rename them.")


def _use_cpu_without_accelerator(args: TrainingArguments) -> None:
    """`torchrun --nproc_per_node N` on a machine without any accelerator means N CPU processes.

    Left alone, the Trainer would see one process in each and every process would train on the whole
    batch by itself. With no accelerator there is one sensible reading, so `use_cpu` is implied (gloo
    process group) and the log says so. An explicit `--ddp_backend` other than gloo on such a machine
    is contradictory: refused, naming the flag.
    """
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes <= 1 or args.use_cpu or torch.accelerator.is_available():
        return
    if args.ddp_backend not in (None, "gloo"):
        raise ValueError(
            f"--ddp_backend {args.ddp_backend}: {processes} processes were launched on a machine without an "
            "accelerator, where only the CPU backend gloo works. Drop --ddp_backend (or pass --ddp_backend gloo)."
        )
    args.use_cpu = True
    logger.info("%d processes launched and no accelerator found: training as %d data-parallel CPU processes "
                "(gloo process group; --use_cpu implied).", processes, processes)

