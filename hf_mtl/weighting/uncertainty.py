"""`uncertainty`: learned log variances weigh the losses (Kendall, Gal & Cipolla 2018).

    F = Σ_i e^(−s_i) L_i + s_i,    dF/dL_i = e^(−s_i)    (log h_i = −s_i, log c = 0)
    ∂F/∂s_i = 1 − e^(−s_i) L_i     (zero at s_i = log L_i)

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and
Semantics", CVPR 2018 (arXiv:1705.07115). s_i = log σ_i² is task i's learned log variance (homoscedastic
uncertainty). The paper's likelihoods give ½e^(−s)L + ½s for a Gaussian (regression) task and
e^(−s)L + ½s for a softmax (classification) task; we use the common simplified form e^(−s)L + s for
every task. Both put the optimum of s_i at the current loss, so the weights are about 1/L_i here and
1/(2 L_i) for either kind under the paper's constants: the choice changes a global factor, not the
balance between tasks.

The s_i start at 0 (F = Σ L_i) and are a `torch.nn.Parameter` in the trainer's optimizer (own group, no
weight decay, learning rate `weighting_lr`, default 0.025: at a fine-tuning rate like 2e-5 they would
hardly move). `observe` sets s.grad = ∂F/∂s, exactly what a one-graph backward of `objective` gives
them. The values are checkpointed in `state_dict`; their optimizer moments in the Trainer's.

Losses are clamped at `loss_epsilon` and a negative one is refused (`log_based`): F is bounded below
in s_i only for L_i > 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .base import Weighting, WeightingConfig, check_number
from .registry import register

#: Default learning rate of a strategy's own parameters (FAMO's β and the GradNorm paper's choice).
DEFAULT_WEIGHTING_LR = 0.025


def by_task(weighting: Weighting, values: Iterable[float]) -> dict[str, float]:
    """One value per task (task order) as a JSON-friendly {task name: float}."""
    return {name: float(v) for name, v in zip(weighting.task_names, values, strict=True)}


def from_task_dict(weighting: Weighting, saved: Mapping[str, float], what: str) -> list[float]:
    """The values of a `by_task` dict in this run's task order, or an error if the tasks differ."""
    if sorted(saved) != sorted(weighting.task_names):
        raise ValueError(
            f"weighting {weighting.name!r}: the checkpoint holds {what} for tasks {sorted(saved)}, but this run "
            f"trains {weighting.task_names}; resume with the same --tasks."
        )
    return [float(saved[name]) for name in weighting.task_names]


class LearnedTaskValues(Weighting):
    """A strategy with one learned value per task, a `torch.nn.Parameter` trained by the trainer's optimizer.

    The trainer adds `parameters()` as their own group (learning rate `parameter_lr()`, from
    `--weighting_lr`, default 0.025; no weight decay); `observe` sets their `.grad`. The values
    are saved by task name under `state_key`, and restored in place so the optimizer keeps its tensor.
    They are float64 on the CPU: K numbers, and the factors are float64 too, so writing derived values
    back (GradNorm's renormalisation) changes no factor by more than rounding.
    """

    state_key: ClassVar[str] = ""
    initial_value: ClassVar[float] = 0.0

    @dataclass
    class Config(WeightingConfig):
        """The flag every learned strategy shares (its subclasses' `Config`s extend this one)."""

        weighting_lr: float | None = field(
            default=None,
            metadata={"help": "Learning rate of a strategy's own parameters (uncertainty, gradnorm, famo, imtl_l, imtl_h); default 0.025, constant."},
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.weighting_lr is not None:
                self.weighting_lr = check_number("weighting_lr", self.weighting_lr, lambda v: v > 0,
                                                 f"a positive learning rate (default {DEFAULT_WEIGHTING_LR})")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lr = self.config.weighting_lr
        self.lr = DEFAULT_WEIGHTING_LR if lr is None else lr
        self.values = torch.nn.Parameter(torch.full((self.num_tasks,), self.initial_value, dtype=torch.float64))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.values]

    def parameter_lr(self) -> float:
        return self.lr

    def set_gradient(self, gradient: torch.Tensor) -> None:
        """`values.grad` = ∂F/∂s; 0 for a task not in the step (a NaN loss in a one-task step)."""
        self.values.grad = torch.nan_to_num(gradient, nan=0.0).to(self.values.dtype)

    def current(self) -> torch.Tensor:
        """The learned values as float64, detached."""
        return self.values.detach().double()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), self.state_key: by_task(self, self.values.tolist())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.state_key in state:
            saved = from_task_dict(self, state[self.state_key], f"learned {self.state_key}")
            with torch.no_grad():
                self.values.copy_(torch.tensor(saved, dtype=torch.float64))

    def hparams(self) -> dict[str, Any]:
        return {"lr": self.lr}


@register
class UncertaintyWeighting(LearnedTaskValues):
    """F = Σ_i e^(−s_i) L_i + s_i with learned log variances s_i (start 0). State: s (by task name)."""

    one_task_steps = True

    name = "uncertainty"
    description = "learned log variances s_i: Σ e^(−s_i) L_i + s_i (Kendall et al. 2018; --weighting_lr)"
    log_based = True
    state_key = "log_variances"

    def task_log_factor(self, i: int, loss: float) -> float:
        return -float(self.values.detach()[i])

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        # Not detached: a one-graph backward gives s the same gradient that `observe` sets.
        s = self.values.to(losses.dtype)
        return (torch.exp(-s) * losses + s).sum()

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        loss = torch.tensor(losses, dtype=torch.float64)
        self.set_gradient(1 - torch.exp(-self.current()) * loss)
