"""`MultiTaskTrainingArguments`: the Trainer's arguments plus the multi-task settings.

The config half of the config/trainer pair (`MultiTaskTrainer` in `hf_mtl.trainer`), as in TRL:
every field is a `hf-mtl train` flag and a key of a YAML/JSON config file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .engine import NAN_POLICIES
from .weighting import WEIGHTINGS, WeightingOptions, validate_weighting_name

logger = logging.getLogger(__name__)


def parse_task_weights(value: str | Mapping[str, float] | None) -> dict[str, float] | None:
    """`"sst2=1,stsb=0.5"` -> `{"sst2": 1.0, "stsb": 0.5}`."""
    if value is None or isinstance(value, Mapping):
        return dict(value) if value is not None else None
    weights: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, sep, number = item.partition("=")
        try:
            weights[name.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(
                f"--task_weights: cannot read {item!r} in {value!r}; write task=weight pairs, e.g. sst2=1,stsb=0.5."
            ) from None
    return weights


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the multi-task settings: the tasks, the weighting strategy and its
    hyperparameters, the fault policy and checkpoint-on-signal."""

    tasks: str | None = field(
        default=None,
        metadata={"help": "Comma-separated task names, e.g. sst2,mrpc,stsb (GLUE: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)."},
    )
    weighting: str = field(
        default="equal",
        metadata={"help": "How task losses are combined; `hf-mtl weightings` lists the strategies: " + ", ".join(WEIGHTINGS)},
    )
    gamma: float = field(
        default=0.5,
        metadata={"help": "Exponent of the `power` weighting: 1 = arithmetic mean, 0 = geometric, +inf = max, -inf = min."},
    )
    task_weights: str | None = field(
        default=None, metadata={"help": "Weights for `static`, e.g. sst2=1,mrpc=1,stsb=0.5."}
    )
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every N optimizer steps (per-task losses and weights included); default 10, not 500."},
    )
    init_estimate_batches: int = field(
        default=0,
        metadata={
            "help": "For `init`: 0 takes the theoretical initial loss (log C for C classes, E[y^2] for regression); "
            "N > 0 measures the mean loss of the first N batches before any update."
        },
    )

    norm_scope: str = field(
        default="all",
        metadata={"help": "grad_normalize: take each task's gradient norm over `all` parameters it touches or the `shared` encoder only (heads then get their raw gradient).", "choices": ["all", "shared"]},
    )
    norm_scale: str = field(
        default="unit",
        metadata={"help": "grad_normalize: scale of the combined update: `unit` (sum of unit vectors), `max` or `mean` task gradient norm.", "choices": ["unit", "max", "mean"]},
    )
    weighting_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of a strategy's own parameters (uncertainty, gradnorm, famo); default 0.025, constant."}
    )
    gradnorm_alpha: float = field(default=1.5, metadata={"help": "gradnorm: restoring-force exponent alpha."})
    dwa_temperature: float = field(default=2.0, metadata={"help": "dwa: softmax temperature T."})
    dwa_window: int = field(default=50, metadata={"help": "dwa: steps per loss-averaging window (windows replace epochs)."})
    famo_weight_decay: float = field(default=0.001, metadata={"help": "famo: weight decay of its logits."})
    cagrad_c: float = field(default=0.4, metadata={"help": "cagrad: conflict-aversion radius c."})
    db_beta: float = field(default=0.9, metadata={"help": "db_mtl: moving-average coefficient beta of the normalised gradients."})
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
        super().__post_init__()
        validate_weighting_name(self.weighting)
        if not math.isfinite(self.gamma):
            raise ValueError(f"--gamma {self.gamma} is not finite; pass a finite exponent, e.g. --gamma 0.5.")
        if self.init_estimate_batches < 0:
            raise ValueError(f"--init_estimate_batches {self.init_estimate_batches} must be >= 0 (0 = theoretical).")
        parse_task_weights(self.task_weights)
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"--nan_policy {self.nan_policy!r} is not one of: {', '.join(NAN_POLICIES)}.")
        if self.enable_jit_checkpoint and self.checkpoint_on_signal:
            # The Trainer's JIT checkpoint saves mid-step and without the weighting state; ours supersedes it.
            logger.warning("--enable_jit_checkpoint is replaced by hf_mtl's --checkpoint_on_signal (a checkpoint at the "
                           "end of the current step, weighting state included); turning enable_jit_checkpoint off.")
            self.enable_jit_checkpoint = False

    def weighting_options(self) -> WeightingOptions:
        return WeightingOptions(
            gamma=self.gamma,
            task_weights=parse_task_weights(self.task_weights),
            init_losses="estimated" if self.init_estimate_batches > 0 else "theoretical",
            norm_scope=self.norm_scope,
            norm_scale=self.norm_scale,
            weighting_lr=self.weighting_lr,
            gradnorm_alpha=self.gradnorm_alpha,
            dwa_temperature=self.dwa_temperature,
            dwa_window=self.dwa_window,
            famo_weight_decay=self.famo_weight_decay,
            cagrad_c=self.cagrad_c,
            db_beta=self.db_beta,
            seed=self.seed,
        )
