"""`static`: fixed user weights, `--task_weights sst2=1,stsb=0.5`.

    F = Σ_i w_i L_i,    dF/dL_i = w_i    (log h_i = log w_i, −inf for a zero weight; log c = 0)

The hand-tuned weighted sum every loss-weighting method starts from (Su, "Chatting about Multi-Task
Learning (I): In the Name of Loss", 2022, https://kexue.fm/archives/8870, eq. 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import Weighting, WeightingConfig
from .registry import register

_FLAG_EXAMPLE = "--task_weights sst2=1,stsb=0.5"


def parse_task_weights(value: str | Mapping[str, float] | None) -> dict[str, float] | None:
    """`"sst2=1,stsb=0.5"` (or the JSON object `{"sst2": 1, "stsb": 0.5}`, what a config file's mapping
    becomes) -> `{"sst2": 1.0, "stsb": 0.5}`; a mapping is copied as it is, None stays None."""
    if value is None or isinstance(value, Mapping):
        return dict(value) if value is not None else None
    if value.strip().startswith("{"):
        try:
            loaded = json.loads(value)
        except json.JSONDecodeError:
            loaded = None
        if not isinstance(loaded, dict):
            raise ValueError(f"--task_weights: cannot read {value!r} as a JSON object; write e.g. {_FLAG_EXAMPLE}.")
        return loaded
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


@register
class StaticWeighting(Weighting):
    """F = Σ_i w_i L_i with `--task_weights` (by task name, one for every task, each finite and ≥ 0, not
    all 0). A zero weight keeps the task in the logs but out of the update. Stateless."""

    one_task_steps = True

    name = "static"
    description = "fixed user weights, Σ w_i L_i (--task_weights sst2=1,stsb=0.5)"

    @dataclass
    class Config(WeightingConfig):
        #: A `task=weight,...` string or a {task: weight} mapping; `__post_init__` makes it a checked dict.
        task_weights: str | None = field(
            default=None, metadata={"help": "Weights for `static`, e.g. sst2=1,mrpc=1,stsb=0.5."}
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            given = parse_task_weights(self.task_weights)
            if not given:
                raise ValueError(f"--weighting static needs one weight per task; pass e.g. {_FLAG_EXAMPLE}.")
            for name, value in given.items():
                try:
                    weight = float(value)
                except (TypeError, ValueError):
                    weight = math.nan
                if not (math.isfinite(weight) and weight >= 0):
                    raise ValueError(
                        f"--task_weights: task {name!r} has weight {value!r}; weights must be finite numbers >= 0, "
                        f"e.g. {_FLAG_EXAMPLE}."
                    )
                given[name] = weight
            if not any(given.values()):
                raise ValueError(f"--task_weights: all task weights are 0, so nothing would be trained; e.g. {_FLAG_EXAMPLE}.")
            self.task_weights = given  # type: ignore[assignment]

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_weights = self._ordered_weights(self.config.task_weights)  # type: ignore[arg-type]

    def _ordered_weights(self, given: Mapping[str, float]) -> list[float]:
        """The (already checked) weights in task order, once they name exactly this run's tasks."""
        prefix = f"weighting {self.name!r}:"
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
        return [given[name] for name in self.task_names]

    def task_log_factor(self, i: int, loss: float) -> float:
        weight = self.task_weights[i]
        return math.log(weight) if weight > 0 else -math.inf

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses * losses.new_tensor(self.task_weights)).sum()

    def hparams(self) -> dict[str, Any]:
        return {"task_weights": dict(zip(self.task_names, self.task_weights))}
