"""`grad_normalize`: per-task gradient normalisation, the update Σ_i g_i / ‖g_i‖ with g_i = ∇_θ L_i.

It is the gradient of Σ_i L_i / sg(‖∇L_i‖): every task contributes a unit vector, so the update does
not change when a task's loss is multiplied by c > 0 (g_i scales, g_i/‖g_i‖ does not) nor when a
constant is added to it (g_i is unchanged) — the "ideal objective" of Su, "Chatting about Multi-Task
Learning (I): In the Name of Loss" (2022, https://kexue.fm/archives/8870, eq. 12–13). Related to
GradNorm (Chen et al. 2018), which learns weights toward equal gradient norms instead of dividing by them.

Flags: `norm_scope` = `all` (the norm over every parameter the task touches: encoder and its head)
or `shared` (encoder only; each head then gets its task's raw gradient); `norm_scale` = `unit`
(Σ g_i/‖g_i‖), `max` (times max_i ‖g_i‖, the scale DB-MTL found better: Lin et al. 2023, "Dual-Balancing
for Multi-Task Learning") or `mean` (times the mean ‖g_i‖, so the update keeps the usual magnitude).
A task whose gradient norm is 0 or not finite contributes nothing that step and is counted in
`num_skipped` (state). Effective weight of task i: scale / ‖g_i‖.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import GradientWeighting, WeightingConfig
from .registry import register

logger = logging.getLogger(__name__)


@register
class GradNormalizeWeighting(GradientWeighting):
    """Σ_i s · g_i / ‖g_i‖ with s = 1 (`unit`), max_i ‖g_i‖ (`max`) or mean_i ‖g_i‖ (`mean`)."""

    name = "grad_normalize"
    description = "per-task gradient normalisation, Σ g_i/‖g_i‖ (scale- and shift-invariant; --norm_scope, --norm_scale)"

    @dataclass
    class Config(WeightingConfig):
        norm_scope: str = field(
            default="all",
            metadata={"help": "grad_normalize: take each task's gradient norm over `all` parameters it touches or the `shared` encoder only (heads then get their raw gradient).", "choices": ["all", "shared"]},
        )
        norm_scale: str = field(
            default="unit",
            metadata={"help": "grad_normalize: scale of the combined update: `unit` (sum of unit vectors), `max` or `mean` task gradient norm.", "choices": ["unit", "max", "mean"]},
        )

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.norm_scope = self.config.norm_scope  # read by the engine
        self.norm_scale = self.config.norm_scale
        self.num_skipped = 0

    def gradient_log_factor(self, i: int, grad_norm: float) -> float:
        if not (math.isfinite(grad_norm) and grad_norm > 0):
            self.num_skipped += 1
            logger.warning("grad_normalize: task %r has gradient norm %s; it contributes nothing this step.",
                           self.task_names[i], grad_norm)
            return -math.inf
        return -math.log(grad_norm)

    def gradient_common_log_factor(self, grad_norms: Sequence[float], losses: Sequence[float]) -> float:
        valid = [n for n in grad_norms if math.isfinite(n) and n > 0]
        if self.norm_scale == "unit" or not valid:
            return 0.0
        return math.log(max(valid) if self.norm_scale == "max" else sum(valid) / len(valid))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "num_skipped": self.num_skipped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.num_skipped = int(state.get("num_skipped", 0))

    def hparams(self) -> dict[str, Any]:
        return {"norm_scope": self.norm_scope, "norm_scale": self.norm_scale}
