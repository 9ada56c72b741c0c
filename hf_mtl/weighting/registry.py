"""The registry of weighting strategies: `--weighting NAME` resolves here, and so do their flags.

Each strategy module decorates its class with `@register`; importing `hf_mtl.weighting` imports every
module, so the registry is complete as soon as the package is. Each strategy declares its own
hyperparameters (its nested `Config` dataclass, see `base.WeightingConfig`); the registry derives the
`hf-mtl train` flags from those declarations (`hparam_flags`, `hparams_dataclass`), hands each strategy
its own fields of a flat {flag: value} mapping (`build_weighting`), and checks a choice of strategy and
flags once (`check_weighting`, called when the training arguments are built).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from ..label_stats import LabelStatistics
from ..tasks import TaskSpec
from .base import Weighting, WeightingConfig

#: Strategy name -> class, in registration order (the order `hf-mtl weightings` lists them in).
WEIGHTINGS: dict[str, type[Weighting]] = {}

_W = TypeVar("_W", bound=type[Weighting])


class HparamFlag(NamedTuple):
    """One strategy flag, as derived from the strategies' `Config` declarations."""

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None
    #: The registered strategies that declare (and use) it, in registration order.
    strategies: tuple[str, ...]


def _declared_flags(cls: type[Weighting]) -> list[HparamFlag]:
    """The flags `cls.Config` declares (its strategies field holds only `cls.name`)."""
    config = cls.Config
    if not (isinstance(config, type) and issubclass(config, WeightingConfig) and dataclasses.is_dataclass(config)):
        raise TypeError(f"{cls.__qualname__}.Config must be a dataclass subclassing hf_mtl.weighting.WeightingConfig.")
    hints = typing.get_type_hints(config)
    flags = []
    for f in dataclasses.fields(config):
        if f.default is dataclasses.MISSING or not f.metadata.get("help"):
            raise TypeError(
                f"{cls.__qualname__}.Config.{f.name}: a strategy flag needs a default and metadata={{'help': ...}}."
            )
        choices = f.metadata.get("choices")
        flags.append(HparamFlag(f.name, hints[f.name], f.default, f.metadata["help"],
                                tuple(choices) if choices is not None else None, (cls.name,)))
    return flags


def _merge(flags: dict[str, HparamFlag], cls: type[Weighting]) -> None:
    """Add the flags of `cls` to `flags`, or a ValueError if one is already declared differently."""
    for flag in _declared_flags(cls):
        seen = flags.get(flag.name)
        if seen is None:
            flags[flag.name] = flag
            continue
        if (seen.type, seen.default, seen.choices) != (flag.type, flag.default, flag.choices):
            raise ValueError(
                f"weighting {cls.name!r} declares --{flag.name} as {flag.type} = {flag.default!r}"
                f"{f' (choices {flag.choices})' if flag.choices else ''}, but it is already declared as {seen.type} = "
                f"{seen.default!r}{f' (choices {seen.choices})' if seen.choices else ''} by {', '.join(seen.strategies)}; "
                "a flag shared by several strategies must have one type and default (declare it once, e.g. in a "
                "shared base Config), or give it another name."
            )
        flags[flag.name] = seen._replace(strategies=seen.strategies + flag.strategies)


def register(cls: _W) -> _W:
    """Class decorator adding a strategy to `WEIGHTINGS` under its `name`, and its `Config` fields to the flags."""
    if not cls.name or not cls.description:
        raise TypeError(f"{cls.__qualname__}: a registered weighting needs a non-empty `name` and `description`.")
    if cls.name in WEIGHTINGS and WEIGHTINGS[cls.name] is not cls:
        raise ValueError(
            f"weighting name {cls.name!r} of {cls.__qualname__} is already taken by "
            f"{WEIGHTINGS[cls.name].__qualname__}; choose another name."
        )
    _merge(hparam_flags(), cls)  # refuses a conflicting declaration before anything is registered
    WEIGHTINGS[cls.name] = cls
    return cls


def hparam_flags() -> dict[str, HparamFlag]:
    """Every strategy flag of the registered strategies (name -> flag), in registration order."""
    flags: dict[str, HparamFlag] = {}
    for cls in WEIGHTINGS.values():
        _merge(flags, cls)
    return flags


def hparams_dataclass(cls_name: str = "WeightingHyperparameters", module: str = __name__) -> type:
    """A dataclass named `cls_name` (in `module`) with one field per strategy flag (type, default, help and
    choices as declared): the base that gives `MultiTaskTrainingArguments` (and so `HfArgumentParser`)
    the strategy flags."""
    specs = []
    for flag in hparam_flags().values():
        metadata: dict[str, Any] = {"help": flag.help}
        if flag.choices is not None:
            metadata["choices"] = list(flag.choices)
        specs.append((flag.name, flag.type, dataclasses.field(default=flag.default, metadata=metadata)))
    made = dataclasses.make_dataclass(cls_name, specs)
    made.__module__ = module
    made.__doc__ = "The hyperparameters of every registered weighting strategy, as flags (derived by the registry)."
    return made


def get_weighting_class(name: str) -> type[Weighting]:
    """The class registered under `name` (case-insensitive)."""
    key = name.strip().lower()
    if key not in WEIGHTINGS:
        raise ValueError(
            f"weighting: unknown strategy {name!r}. Choose one of: {', '.join(WEIGHTINGS)} "
            "(or LOSS+GRADIENT, e.g. geometric+grad_normalize)."
        )
    return WEIGHTINGS[key]


def weighting_classes(name: str) -> list[type[Weighting]]:
    """The classes of `--weighting name` (one, or two for LOSS+GRADIENT), or a ValueError for an unknown
    strategy or a composition that makes no sense. The one place a weighting name is checked."""
    parts = name.split("+")
    if len(parts) > 2:
        raise ValueError(f"--weighting {name}: compose at most two strategies, LOSS+GRADIENT (e.g. prior+pcgrad).")
    classes = [get_weighting_class(p) for p in parts]
    if len(classes) == 2 and (classes[0].kind != "loss" or classes[1].kind == "loss"):
        raise ValueError(
            f"--weighting {name}: a composition is a loss transform followed by a gradient-level strategy, "
            f"LOSS+GRADIENT (e.g. geometric+grad_normalize); here the kinds are {classes[0].kind}+{classes[1].kind}."
        )
    return classes


def validate_weighting_name(name: str) -> None:
    """Fail early on an unknown strategy or a composition that makes no sense (see `weighting_classes`)."""
    weighting_classes(name)


def _configs(classes: Sequence[type[Weighting]], hparams: Mapping[str, Any] | None) -> list[WeightingConfig]:
    """Each class's `Config` from its own fields of the flat `hparams` (defaults for the rest); validated."""
    hparams = dict(hparams or {})
    known = hparam_flags()
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise ValueError(
            f"weighting: unknown hyperparameter(s) {', '.join(unknown)}; the strategy flags are: {', '.join(known)}."
        )
    configs = []
    for cls in classes:
        own = {f.name for f in dataclasses.fields(cls.Config)}
        configs.append(cls.Config(**{k: v for k, v in hparams.items() if k in own}))
    return configs


def check_weighting(name: str, hparams: Mapping[str, Any] | None = None) -> list[str]:
    """Check `--weighting name` and the hyperparameters its strategies take from `hparams` (a ValueError
    naming the flag otherwise). A flag those strategies ignore but that differs from its default is
    checked too (by the first strategy declaring it: a malformed value is an error whatever the strategy),
    and gets a warning, returned here."""
    hparams = dict(hparams or {})
    classes = weighting_classes(name)
    _configs(classes, hparams)
    used = {f.name for cls in classes for f in dataclasses.fields(cls.Config)}
    flags = hparam_flags()
    warnings = []
    for flag_name, value in hparams.items():
        flag = flags[flag_name]
        if flag_name in used or value == flag.default:
            continue
        _configs([WEIGHTINGS[flag.strategies[0]]], hparams)
        warnings.append(f"--{flag_name} is not used by --weighting {name}; it is used by: {', '.join(flag.strategies)}.")
    return warnings


def build_weighting(
    name: str,
    tasks: Sequence[TaskSpec],
    label_stats: Mapping[str, LabelStatistics] | None = None,
    hparams: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Weighting:
    """Instantiate strategy `name` for `tasks`.

    `label_stats` (training labels, by task name) is read by the strategies that need it (`init` for
    regression tasks, `prior`). `hparams` is a flat {flag: value} mapping (e.g.
    `MultiTaskTrainingArguments.weighting_hparams()`): each strategy takes its own fields from it and
    defaults for the rest; a key that no registered strategy declares is a ValueError. `seed` goes to the
    randomised strategies (`rlw`, `pcgrad`). `A+B` composes a loss transform A with a gradient-level
    strategy B (`hf_mtl.weighting.compose`), each part taking its own fields."""
    classes = weighting_classes(name)
    parts = [
        cls(tasks, label_stats=label_stats, config=config, **({"seed": seed} if cls.randomised else {}))
        for cls, config in zip(classes, _configs(classes, hparams))
    ]
    if len(parts) == 1:
        return parts[0]
    from .compose import compose

    return compose(*parts)


def describe_weightings() -> list[tuple[str, str]]:
    """(name, one-line description) of every strategy, in registry order."""
    return [(name, cls.description) for name, cls in WEIGHTINGS.items()]
