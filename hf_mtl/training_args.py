"""`MultiTaskTrainingArguments`: the Trainer's arguments plus the multi-task settings.

The config half of the config/trainer pair (`MultiTaskTrainer` in `hf_mtl.trainer`), as in TRL:
every field is a `hf-mtl train` flag and a key of a YAML/JSON config file.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from transformers import TrainingArguments

from .engine import NAN_POLICIES, check_nan_policy
from .sampling import SAMPLING_SCHEDULES, TASK_SAMPLING_MODES, SamplingSchedule
from .weighting import WEIGHTINGS, check_weighting, hparams_dataclass, weighting_classes

logger = logging.getLogger(__name__)


@dataclass
class _TasksAndWeighting:
    """The tasks and the strategy: their own base so that --help lists them before the strategy flags."""

    tasks: str | None = field(
        default=None,
        metadata={"help": "Comma-separated task names, e.g. sst2,mrpc,stsb (GLUE: cola, sst2, mrpc, stsb, qqp, mnli, qnli, "
                  "rte, wnli); a config file's `tasks:` list may also hold task entries (your own data, any kind), as "
                  "--task_config does."},
    )
    weighting: str = field(
        default="equal",
        metadata={"help": "How task losses are combined; `hf-mtl weightings` lists the strategies: " + ", ".join(WEIGHTINGS)},
    )
    task_sampling: str = field(
        default="all_per_step",
        metadata={"help": "`all_per_step` (default): every optimizer step holds rows of every task, split "
                  "between them by --sampling_alpha; `one_per_step`: each step trains on one task, drawn with "
                  "probability ∝ n_i^α (only strategies whose factor is per task: "
                  + ", ".join(n for n, c in WEIGHTINGS.items() if c.one_task_steps) + ").",
                  "choices": list(TASK_SAMPLING_MODES)},
    )
    sampling_alpha: float | None = field(
        default=None,
        metadata={"help": "α of the task shares ∝ n_i^α (n_i: the task's training rows; times its `oversample` "
                  "factor from a task file): 0 = equal rows per task (the default), 0.5 = square root, 1 = "
                  "proportional. With `all_per_step` a step's rows (per_device_train_batch_size × number of tasks × "
                  "processes × gradient_accumulation_steps) are split by it, at least one row of every task per "
                  "micro-batch; with `one_per_step` it sets each task's draw probability. The start of "
                  "--sampling_schedule linear."},
    )
    sampling_schedule: str = field(
        default="constant",
        metadata={"help": "α over training: `constant`; `linear` from --sampling_alpha at the first step to "
                  "--sampling_alpha_end at the last; `anneal`, α = 1 − 0.8·e/(E − 1) in epoch e of E "
                  "(BERT-and-PALs; sets α itself). The current α is logged as `sampling_alpha`.",
                  "choices": list(SAMPLING_SCHEDULES)},
    )
    sampling_alpha_end: float | None = field(
        default=None,
        metadata={"help": "α at the last step of --sampling_schedule linear (e.g. 1 -> 0.5)."},
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
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train from scratch into an --output_dir that already holds a run, as in run_glue.py. Without "
            "it, an output_dir with checkpoint-* folders resumes from the last complete one, and one that holds a "
            "finished run (a model: config.json, model.safetensors, ...; or results: all_results.json, "
            "trainer_state.json, ...) and no checkpoint is refused before any data is read. With it, no checkpoint "
            "is resumed, and the old run's checkpoint-* folders and results files are deleted when training starts "
            "(so that a later resume or all_results.json cannot mix the two runs); the model is overwritten."
        },
    )
    checkpoint_on_signal: bool = field(
        default=True,
        metadata={
            "help": "On SIGTERM or SIGINT during training, finish the current optimizer step, save a checkpoint "
            "(weighting state included) and stop; rerun to resume. A second signal stops at once."
        },
    )
    best_metric_for_task: str | None = field(
        default=None,
        metadata={
            "help": "With evaluation during training, each task's best evaluation (value, step, checkpoint) is recorded "
            "in trainer_state.json and its checkpoint is kept out of --save_total_limit's rotation (up to one more "
            "checkpoint per task on disk). What ranks a task: its score (the mean of its metrics) unless named here, "
            "e.g. mrpc=f1,stsb=spearmanr (loss: lower is better; other metrics: higher is better)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.tasks, list | tuple):  # tasks=["sst2", "mrpc"] is tasks="sst2,mrpc"
            self.tasks = ",".join(map(str, self.tasks))
        _check_counts(self)  # before the Trainer's own checks, which let these through or fail obscurely
        _use_cpu_without_accelerator(self)
        super().__post_init__()
        # The strategy name and the hyperparameters it uses are checked here, once (by their declarations).
        for message in check_weighting(self.weighting, self.weighting_hparams()):
            logger.warning(message)
        check_nan_policy(self.nan_policy)
        self.sampling_plan()  # the sampling flags, checked before any data is read
        if self.enable_jit_checkpoint and self.checkpoint_on_signal:
            # The Trainer's JIT checkpoint saves mid-step and without the weighting state; ours supersedes it.
            logger.warning("--enable_jit_checkpoint is replaced by hf_mtl's --checkpoint_on_signal (a checkpoint at the "
                           "end of the current step, weighting state included); turning enable_jit_checkpoint off.")
            self.enable_jit_checkpoint = False

    def sampling_plan(self) -> SamplingSchedule:
        """The α schedule of the run (`hf_mtl.sampling`), after checking the sampling flags together: their
        values, `anneal` without --sampling_alpha, and `one_per_step` only with a strategy that can step on one
        task (`Weighting.one_task_steps`)."""
        if self.task_sampling not in TASK_SAMPLING_MODES:
            raise ValueError(f"--task_sampling {self.task_sampling!r} is not one of: {', '.join(TASK_SAMPLING_MODES)}.")
        if self.sampling_schedule == "anneal" and self.sampling_alpha is not None:
            raise ValueError(f"--sampling_alpha {self.sampling_alpha}: --sampling_schedule anneal sets α itself "
                             "(1 at the first epoch down to 0.2 at the last); drop --sampling_alpha, or use "
                             "--sampling_schedule linear --sampling_alpha A --sampling_alpha_end B.")
        alpha = self.sampling_alpha if self.sampling_alpha is not None else 0.0
        schedule = SamplingSchedule(self.sampling_schedule, alpha, self.sampling_alpha_end)
        if self.task_sampling == "one_per_step":
            needs_all = [c for c in weighting_classes(self.weighting) if not c.one_task_steps]
            if needs_all:
                why = {"loss": "its common factor (or its update of a task's weight) needs every task's loss in "
                               "every step",
                       "gradient": "it normalises the task gradients of a step jointly",
                       "aggregator": "it combines all K task gradients of a step at once"}[needs_all[0].kind]
                able = ", ".join(n for n, c in WEIGHTINGS.items() if c.one_task_steps)
                raise ValueError(
                    f"--task_sampling one_per_step --weighting {self.weighting}: {needs_all[0].name} cannot step on "
                    f"one task: {why}. Use a strategy whose factor is per task ({able}), or keep every task in "
                    "every step (--task_sampling all_per_step) and size the shares with --sampling_alpha.")
        return schedule

    def weighting_hparams(self) -> dict[str, Any]:
        """Every strategy flag and its value, {flag: value}: what `build_weighting(..., hparams=...)` takes."""
        return {f.name: getattr(self, f.name) for f in fields(WeightingHyperparameters)}


_shadowed = {f.name for f in fields(WeightingHyperparameters)} & (
    {f.name for f in fields(TrainingArguments)} | {f.name for f in fields(_TasksAndWeighting)}
    | set(MultiTaskTrainingArguments.__annotations__)
)
if _shadowed:
    raise TypeError(f"weighting flag(s) {', '.join(sorted(_shadowed))} clash with other training arguments; rename them.")


def _check_counts(args: TrainingArguments) -> None:
    """The count flags the Trainer does not check itself (or checks only where they crash, late, or never),
    each refused with the flag, the value and the valid range. Left to transformers: --logging_steps 0,
    non-integer steps above 1, --warmup_steps < 0, --torch_empty_cache_steps, --eval_steps 0 (= logging_steps)."""

    def whole(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    def refuse(flag: str, value: Any, requirement: str) -> None:
        raise ValueError(f"--{flag} must be {requirement}, got {value!r}.")

    for flag, meaning in (("per_device_train_batch_size", "rows of each task per device and micro-batch; default 8"),
                          ("per_device_eval_batch_size", "rows per device in an evaluation batch; default 8"),
                          ("gradient_accumulation_steps", "micro-batches summed into one optimizer step; default 1")):
        value = getattr(args, flag)
        if not whole(value) or value < 1:
            refuse(flag, value, f"a whole number >= 1 ({meaning})")
    if not whole(args.max_steps) or args.max_steps == 0 or args.max_steps < -1:
        refuse("max_steps", args.max_steps, "a whole number >= 1 (optimizer steps to train), or -1 (the default: "
               "train for --num_train_epochs)")
    epochs = args.num_train_epochs
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Real) or not (math.isfinite(epochs) and epochs > 0):
        refuse("num_train_epochs", epochs, "a finite number > 0 (fractions allowed, e.g. 0.5; default 3)")
    for flag, strategy in (("logging_steps", args.logging_strategy), ("eval_steps", args.eval_strategy),
                           ("save_steps", args.save_strategy)):
        value = getattr(args, flag)
        if str(getattr(strategy, "value", strategy)) != "steps" or value is None:
            continue
        zero_left_to_transformers = flag != "save_steps"  # it refuses --logging_steps 0; --eval_steps 0 is "unset"
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0 \
                or (value == 0 and not zero_left_to_transformers):
            kind = flag.split("_")[0]
            refuse(flag, value, f"a whole number of optimizer steps >= 1, or a fraction in (0, 1) of the training "
                   f"steps (with --{kind}_strategy steps; --{kind}_strategy no turns it off)")
    if args.save_total_limit is not None and (not whole(args.save_total_limit) or args.save_total_limit < 1):
        refuse("save_total_limit", args.save_total_limit, "a whole number >= 1 (checkpoints kept; transformers would "
               "read 0 or less as 'keep every checkpoint'), or unset to keep every checkpoint (--save_strategy no "
               "saves none)")
    if args.eval_accumulation_steps is not None and (not whole(args.eval_accumulation_steps)
                                                     or args.eval_accumulation_steps < 1):
        refuse("eval_accumulation_steps", args.eval_accumulation_steps, "a whole number >= 1 (evaluation batches "
               "kept on the device before moving them to the CPU), or unset")
    if not whole(args.dataloader_num_workers) or args.dataloader_num_workers < 0:
        refuse("dataloader_num_workers", args.dataloader_num_workers, "a whole number >= 0 (worker processes; 0, the "
               "default, loads data in the main process)")
    if args.dataloader_prefetch_factor is not None and (not whole(args.dataloader_prefetch_factor)
                                                        or args.dataloader_prefetch_factor < 1):
        refuse("dataloader_prefetch_factor", args.dataloader_prefetch_factor, "a whole number >= 1 (batches loaded "
               "ahead by each worker), or unset")


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

