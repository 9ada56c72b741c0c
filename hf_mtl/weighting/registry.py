"""The registry of weighting strategies: `--weighting NAME` resolves here.

Each strategy module decorates its class with `@register`; importing `hf_mtl.weighting` imports every
module, so the registry is complete as soon as the package is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from ..label_stats import LabelStatistics
from ..tasks import TaskSpec
from .base import Weighting, WeightingOptions

#: Strategy name -> class, in registration order (the order `hf-mtl weightings` lists them in).
WEIGHTINGS: dict[str, type[Weighting]] = {}

_W = TypeVar("_W", bound=type[Weighting])


def register(cls: _W) -> _W:
    """Class decorator adding a strategy to `WEIGHTINGS` under its `name`."""
    if not cls.name or not cls.description:
        raise TypeError(f"{cls.__qualname__}: a registered weighting needs a non-empty `name` and `description`.")
    if cls.name in WEIGHTINGS and WEIGHTINGS[cls.name] is not cls:
        raise ValueError(
            f"weighting name {cls.name!r} of {cls.__qualname__} is already taken by "
            f"{WEIGHTINGS[cls.name].__qualname__}; choose another name."
        )
    WEIGHTINGS[cls.name] = cls
    return cls


def get_weighting_class(name: str) -> type[Weighting]:
    """The class registered under `name` (case-insensitive)."""
    key = name.strip().lower()
    if key not in WEIGHTINGS:
        raise ValueError(
            f"weighting: unknown strategy {name!r}. Choose one of: {', '.join(WEIGHTINGS)} "
            "(or LOSS+GRADIENT, e.g. geometric+grad_normalize)."
        )
    return WEIGHTINGS[key]


def validate_weighting_name(name: str) -> None:
    """Fail early (argument parsing) on an unknown strategy or a composition that makes no sense."""
    parts = name.split("+")
    if len(parts) > 2:
        raise ValueError(f"--weighting {name}: compose at most two strategies, LOSS+GRADIENT (e.g. prior+pcgrad).")
    classes = [get_weighting_class(p) for p in parts]
    if len(classes) == 2 and (classes[0].kind != "loss" or classes[1].kind == "loss"):
        raise ValueError(
            f"--weighting {name}: a composition is a loss transform followed by a gradient-level strategy, "
            f"LOSS+GRADIENT (e.g. geometric+grad_normalize); here the kinds are {classes[0].kind}+{classes[1].kind}."
        )


def build_weighting(
    name: str,
    tasks: Sequence[TaskSpec],
    label_stats: Mapping[str, LabelStatistics] | None = None,
    options: WeightingOptions | None = None,
) -> Weighting:
    """Instantiate strategy `name` for `tasks`; `label_stats` (training labels, by task name) is read by
    the strategies that need it (`init` for regression tasks, `prior`). `A+B` composes a loss
    transform A with a gradient-level strategy B (`hf_mtl.weighting.compose`)."""
    if "+" in name:
        from .compose import compose

        validate_weighting_name(name)
        first, second = name.split("+")
        return compose(build_weighting(first, tasks, label_stats, options),
                       build_weighting(second, tasks, label_stats, options))
    return get_weighting_class(name)(tasks, label_stats=label_stats, options=options)


def describe_weightings() -> list[tuple[str, str]]:
    """(name, one-line description) of every strategy, in registry order."""
    return [(name, cls.description) for name, cls in WEIGHTINGS.items()]
