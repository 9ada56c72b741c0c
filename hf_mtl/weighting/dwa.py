"""`dwa`: Dynamic Weight Average, weights from the recent rate of change of each loss (Liu et al. 2019).

    F = Σ_i w_i L_i,    w = K · softmax(r / T),    r_i = L̄_i(t−1) / L̄_i(t−2)
    dF/dL_i = w_i    (log h_i = log K + r_i/T − log Σ_j e^(r_j/T), log c = 0)

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019 (arXiv:1803.10704),
eq. 7. A task whose loss fell less over the last period (larger r_i) gets more weight; the temperature T
(`dwa_temperature`, default 2 as in the paper) softens the softmax. The paper averages the losses over
epochs; here L̄_i(t−1) and L̄_i(t−2) are the mean losses of the last two completed windows of
`dwa_window` optimizer steps (default 50), because a multi-task "epoch" can be long and uneven. Until
two windows are complete every w_i is 1 (F = Σ L_i). Weights sum to K.

`observe` adds the step's losses to the current window; when that closes the window the weights change
from the next step on (the engine has already taken this step's factors; the common factor is 0).

State: the running sums of the current window, its step count, and the means of the last two windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import Weighting, WeightingConfig, check_number
from .registry import register
from .uncertainty import by_task, from_task_dict


@register
class DynamicWeightAverage(Weighting):
    """F = Σ_i w_i L_i with w = K softmax(r/T) from the loss ratios of the last two windows."""

    name = "dwa"
    description = "Dynamic Weight Average: K·softmax(recent loss ratios / T) over windows of --dwa_window steps"
    log_based = True

    @dataclass
    class Config(WeightingConfig):
        dwa_temperature: float = field(default=2.0, metadata={"help": "dwa: softmax temperature T."})
        dwa_window: int = field(default=50, metadata={"help": "dwa: steps per loss-averaging window (windows replace epochs)."})

        def __post_init__(self) -> None:
            super().__post_init__()
            self.dwa_temperature = check_number("dwa_temperature", self.dwa_temperature, lambda v: v > 0,
                                                "a positive temperature (default 2)")
            self.dwa_window = int(check_number("dwa_window", self.dwa_window, lambda v: v >= 1 and v == int(v),
                                               "a whole number of optimizer steps >= 1 (default 50)"))

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = self.config.dwa_temperature
        self.window = self.config.dwa_window
        self.window_sums = np.zeros(self.num_tasks)
        self.window_steps = 0
        #: Mean losses of the last two completed windows, oldest first.
        self.window_means: list[np.ndarray] = []

    def current_log_weights(self) -> np.ndarray:
        if len(self.window_means) < 2:
            return np.zeros(self.num_tasks)
        scaled = self.window_means[1] / self.window_means[0] / self.temperature
        return math.log(self.num_tasks) + scaled - np.logaddexp.reduce(scaled)

    def task_log_factor(self, i: int, loss: float) -> float:
        return float(self.current_log_weights()[i])

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses * losses.new_tensor(np.exp(self.current_log_weights()))).sum()

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        self.window_sums += np.asarray(losses, dtype=np.float64)
        self.window_steps += 1
        if self.window_steps == self.window:
            self.window_means = [*self.window_means, self.window_sums / self.window][-2:]
            self.window_sums = np.zeros(self.num_tasks)
            self.window_steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "window_sums": by_task(self, self.window_sums),
            "window_steps": self.window_steps,
            "window_means": [by_task(self, means) for means in self.window_means],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "window_sums" not in state:
            return
        self.window_sums = np.array(from_task_dict(self, state["window_sums"], "loss sums"))
        self.window_steps = int(state["window_steps"])
        self.window_means = [np.array(from_task_dict(self, m, "window means")) for m in state["window_means"]]

    def hparams(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "window": self.window}
