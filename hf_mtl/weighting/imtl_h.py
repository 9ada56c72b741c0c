"""`imtl_h`: IMTL, the hybrid of its two halves (Liu et al. 2021, "Towards Impartial Multi-task Learning",
ICLR, Sec. 3.3): IMTL-L's learned loss scales (`imtl_l`) and IMTL-G's gradient balancing (`imtl`).

Each task's gradient is taken on its scaled loss e^(s_i) L_i − s_i, i.e. the rows become e^(s_i) g_i,
and IMTL-G combines them (weights α summing to 1, equal projections of the update on every unit
gradient); the scales learn as in IMTL-L (∂/∂s_i = e^(s_i) L_i − 1):

    d = Σ_i α_i e^(s_i) g_i,   α = IMTL-G on the rows e^(s_i) g_i.

It is the composition `imtl_l+imtl` under one name (`compose`). IMTL-G's direction does not depend on
the row scales, so the learned scales change the length of the shared update: the weights α sum to 1
on the scaled rows. Conventions: as LibMTL's `IMTL` (which is this hybrid), with one difference: the
task heads get their task's raw gradient here (as under every aggregator of this package), in LibMTL
e^(s_i) times it. Learning rate of s: `--weighting_lr` (default 0.025). State: s (by task name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..label_stats import LabelStatistics
from ..tasks import TaskSpec
from .compose import ComposedAggregator
from .imtl import IMTLGWeighting
from .imtl_l import IMTLLWeighting
from .registry import register
from .uncertainty import LearnedTaskValues


@register
class IMTLHybridWeighting(ComposedAggregator):
    """IMTL-G on the rows e^(s_i) g_i, with s learned as in IMTL-L."""

    name = "imtl_h"
    description = "IMTL hybrid (Liu et al. 2021): IMTL-G on the gradients of IMTL-L's learned scaled losses (--weighting_lr)"
    log_based = True
    Config = LearnedTaskValues.Config

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        label_stats: Mapping[str, LabelStatistics] | None = None,
        config: LearnedTaskValues.Config | None = None,
        *,
        loss_epsilon: float = 1e-8,
    ) -> None:
        config = config if config is not None else LearnedTaskValues.Config()
        if not isinstance(config, LearnedTaskValues.Config):
            raise TypeError(f"weighting 'imtl_h': config must be a {LearnedTaskValues.Config.__qualname__}, "
                            f"got {type(config).__qualname__}.")
        loss_part = IMTLLWeighting(tasks, label_stats, IMTLLWeighting.Config(weighting_lr=config.weighting_lr),
                                   loss_epsilon=loss_epsilon)
        super().__init__(loss_part, IMTLGWeighting(tasks, label_stats, loss_epsilon=loss_epsilon))
        self.config = config
        self.name = type(self).name  # not "imtl_l+imtl": the checkpoint and the model card name the strategy

    def hparams(self) -> dict[str, Any]:
        return {**self.loss_part.hparams(), "gradient": self.gradient_part.name}
