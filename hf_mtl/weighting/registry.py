"""The registry of weighting strategies: `--weighting NAME` resolves here.

Each strategy module decorates its class with `@register`; importing `hf_mtl.weighting` imports every
module, so the registry is complete as soon as the package is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from ..data import LabelStatistics
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
        raise ValueError(f"weighting: unknown strategy {name!r}. Choose one of: {', '.join(WEIGHTINGS)}.")
    return WEIGHTINGS[key]


def build_weighting(
    name: str,
    tasks: Sequence[TaskSpec],
    label_stats: Mapping[str, LabelStatistics] | None = None,
    options: WeightingOptions | None = None,
) -> Weighting:
    """Instantiate strategy `name` for `tasks`; `label_stats` (training labels, by task name) is read by
    the strategies that need it (`init` for regression tasks, `prior`)."""
    return get_weighting_class(name)(tasks, label_stats=label_stats, options=options)


def describe_weightings() -> list[tuple[str, str]]:
    """(name, one-line description) of every strategy, in registry order."""
    return [(name, cls.description) for name, cls in WEIGHTINGS.items()]
