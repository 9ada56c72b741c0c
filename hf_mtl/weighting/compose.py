"""Composition: a loss transform followed by a gradient-level strategy, `--weighting prior+pcgrad`.

`A+B` first weights each task by the loss-level strategy A (its effective weight w_i = dF_A/dL_i, so
task i's gradient becomes w_i·g_i, the gradient of A's objective restricted to task i), then lets the
gradient-level strategy B combine those weighted gradients. For instance `geometric+grad_normalize`
normalises the gradients of log L_i (DB-MTL without its EMA, Lin et al. 2023), and `prior+pcgrad` runs
PCGrad on prior-normalised losses.

Which pairs make sense: A must be loss-level and B gradient-level. Two loss-level strategies are one
objective of another (write it as one strategy); a gradient-level strategy first would leave nothing
for the second to see but an already combined gradient. Those pairs are rejected with this reason
(`registry.weighting_classes`). Each part takes its own hyperparameters (`build_weighting`).
Note that `unit`-scaled `grad_normalize` is invariant to A (each g_i is divided by its own norm): A
only changes its `max`/`mean` scale there, while aggregators such as PCGrad or MGDA see w_i·g_i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .base import AggregatorWeighting, GradientWeighting, Weighting


class _Composed:
    """What both composed kinds share: the two parts, the loss check of A, the joint state."""

    loss_part: Weighting
    gradient_part: GradientWeighting

    def _bind(self, loss_part: Weighting, gradient_part: GradientWeighting) -> None:
        self.loss_part, self.gradient_part = loss_part, gradient_part
        self.name = f"{loss_part.name}+{gradient_part.name}"
        self.log_based = loss_part.log_based
        self.norm_scope = gradient_part.norm_scope

    @property
    def needs_initial_losses(self) -> bool:
        return self.loss_part.needs_initial_losses

    def set_initial_losses(self, losses: Sequence[float]) -> None:
        self.loss_part.set_initial_losses(losses)

    def check_loss(self, i: int, loss: float) -> float:
        return self.loss_part.check_loss(i, loss)

    # A learning loss transform (uncertainty, GradNorm, DWA, RLW, FAMO) keeps learning inside a composition.

    @property
    def probes_last_shared_layer(self) -> bool:  # type: ignore[override]
        return self.loss_part.probes_last_shared_layer

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.loss_part.parameters() + self.gradient_part.parameters()

    def parameter_lr(self) -> float | None:
        return self.loss_part.parameter_lr()

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        self.loss_part.observe(losses, probe_norms)
        self.gradient_part.observe(losses, None)

    def loss_weights(self, losses: Sequence[float]) -> torch.Tensor:
        return torch.exp(torch.as_tensor(self.loss_part.log_weights(losses)))

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss_part.state_dict(), "gradient": self.gradient_part.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loss_part.load_state_dict(state["loss"])
        self.gradient_part.load_state_dict(state["gradient"])

    def hparams(self) -> dict[str, Any]:
        return {"loss": {"name": self.loss_part.name, **self.loss_part.hparams()},
                "gradient": {"name": self.gradient_part.name, **self.gradient_part.hparams()}}

    def __repr__(self) -> str:
        return f"{self.loss_part!r}+{self.gradient_part!r}"


class ComposedNormalizer(_Composed, GradientWeighting):
    """A + a per-task gradient strategy (`grad_normalize`): B's factors, with B's scale taken over w_i·‖g_i‖."""

    description = "loss transform followed by a per-task gradient normaliser"

    def __init__(self, loss_part: Weighting, gradient_part: GradientWeighting) -> None:
        GradientWeighting.__init__(self, loss_part.tasks, loss_part.label_stats, loss_epsilon=loss_part.loss_epsilon)
        self._bind(loss_part, gradient_part)

    def gradient_log_factor(self, i: int, grad_norm: float) -> float:
        return self.gradient_part.gradient_log_factor(i, grad_norm)

    def gradient_common_log_factor(self, grad_norms: Sequence[float], losses: Sequence[float]) -> float:
        weighted = (self.loss_weights(losses) * torch.as_tensor(grad_norms, dtype=torch.float64)).tolist()
        return self.gradient_part.gradient_common_log_factor(weighted, losses)


class ComposedAggregator(_Composed, AggregatorWeighting):
    """A + an aggregator: B aggregates the rows w_i·g_i."""

    description = "loss transform followed by a gradient aggregator"

    def __init__(self, loss_part: Weighting, gradient_part: AggregatorWeighting) -> None:
        AggregatorWeighting.__init__(self, loss_part.tasks, loss_part.label_stats, loss_epsilon=loss_part.loss_epsilon)
        self._bind(loss_part, gradient_part)

    def aggregate(self, grads: torch.Tensor, losses: Sequence[float]) -> torch.Tensor:
        # Scale the rows in place (no second K × P matrix) and undo it after: the engine reads G again.
        weights = self.loss_weights(losses).to(grads)[:, None]
        grads.mul_(weights)
        try:
            return self.gradient_part.aggregate(grads, losses)
        finally:
            grads.div_(torch.where(weights > 0, weights, torch.ones_like(weights)))


def compose(loss_part: Weighting, gradient_part: Weighting) -> GradientWeighting:
    """`loss_part+gradient_part`. Which pairs make sense is checked once, from the name, by
    `registry.weighting_classes` (what `build_weighting("A+B", ...)` calls); here a wrong pair is a
    programming error."""
    if loss_part.kind != "loss" or not isinstance(gradient_part, GradientWeighting):
        raise TypeError(
            f"compose({loss_part.name}, {gradient_part.name}): needs a loss-level then a gradient-level strategy, "
            f"got {loss_part.kind}+{gradient_part.kind}; build_weighting('{loss_part.name}+{gradient_part.name}', ...) "
            "says why the pair makes no sense."
        )
    if isinstance(gradient_part, AggregatorWeighting):
        return ComposedAggregator(loss_part, gradient_part)
    return ComposedNormalizer(loss_part, gradient_part)
