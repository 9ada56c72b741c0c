"""`static`: fixed user weights, `--task_weights sst2=1,stsb=0.5`.

    F = Σ_i w_i L_i,    dF/dL_i = w_i    (log h_i = log w_i, −inf for a zero weight; log c = 0)

The hand-tuned weighted sum every loss-weighting method starts from (Su, "Chatting about Multi-Task
Learning (I): In the Name of Loss", 2022, https://kexue.fm/archives/8870, eq. 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .base import Weighting
from .registry import register

_FLAG_EXAMPLE = "--task_weights sst2=1,stsb=0.5"


@register
class StaticWeighting(Weighting):
    """F = Σ_i w_i L_i with `options.task_weights` (by task name, one for every task, each finite and
    ≥ 0, not all 0). A zero weight keeps the task in the logs but out of the update. Stateless."""

    name = "static"
    description = "fixed user weights, Σ w_i L_i (--task_weights sst2=1,stsb=0.5)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_weights = self._checked_weights(self.options.task_weights)

    def _checked_weights(self, given: Mapping[str, float] | None) -> list[float]:
        prefix = f"weighting {self.name!r}:"
        if not given:
            raise ValueError(f"{prefix} needs one weight per task; pass e.g. {_FLAG_EXAMPLE}.")
        unknown = sorted(set(given) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"{prefix} task_weights name {', '.join(map(repr, unknown))}, which is not among the tasks "
                f"{self.task_names}; weight exactly those, e.g. {_FLAG_EXAMPLE}."
            )
        missing = [name for name in self.task_names if name not in given]
        if missing:
            raise ValueError(
                f"{prefix} no weight for task {', '.join(map(repr, missing))}; "
                f"give every task one, e.g. {_FLAG_EXAMPLE}."
            )
        weights = []
        for name in self.task_names:
            try:
                weight = float(given[name])
            except (TypeError, ValueError):
                weight = math.nan
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"{prefix} task {name!r} has weight {given[name]!r}; weights must be finite numbers >= 0, "
                    f"e.g. {_FLAG_EXAMPLE}."
                )
            weights.append(weight)
        if not any(weights):
            raise ValueError(f"{prefix} all task weights are 0, so nothing would be trained; e.g. {_FLAG_EXAMPLE}.")
        return weights

    def task_log_factor(self, i: int, loss: float) -> float:
        weight = self.task_weights[i]
        return math.log(weight) if weight > 0 else -math.inf

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses * losses.new_tensor(self.task_weights)).sum()

    def hparams(self) -> dict[str, Any]:
        return {"task_weights": dict(zip(self.task_names, self.task_weights))}
