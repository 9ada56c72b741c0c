"""How the task losses are balanced: the registry and one module per strategy.

`--weighting NAME` picks a class from `WEIGHTINGS`; `build_weighting` instantiates it. Importing this
package registers every strategy below (in this order, which `hf-mtl weightings` lists).
"""

from .base import AggregatorWeighting, GradientWeighting, Weighting, WeightingOptions
from .registry import (
    WEIGHTINGS,
    build_weighting,
    describe_weightings,
    get_weighting_class,
    register,
    validate_weighting_name,
)

# Strategy modules register themselves on import; the order here is the registry order, so keep
# import sorters away from it.
# isort: off
from .equal import EqualWeighting
from .static import StaticWeighting
from .init import InitWeighting
from .prior import PriorWeighting
from .realtime import RealtimeWeighting
from .geometric import GeometricWeighting
from .power import PowerWeighting
from .uncertainty import UncertaintyWeighting
from .gradnorm import GradNormWeighting
from .dwa import DynamicWeightAverage
from .rlw import RandomWeighting
from .famo import FAMOWeighting
from .grad_normalize import GradNormalizeWeighting
from .pcgrad import PCGradWeighting
from .mgda import MGDAWeighting
from .cagrad import CAGradWeighting
from .imtl import IMTLGWeighting
from .nash_mtl import NashMTLWeighting
from .aligned_mtl import AlignedMTLWeighting
from .upgrad import UPGradWeighting
from .db_mtl import DBMTLWeighting
# isort: on

__all__ = [
    "WEIGHTINGS",
    "EqualWeighting",
    "AggregatorWeighting",
    "GeometricWeighting",
    "GradNormalizeWeighting",
    "GradientWeighting",
    "InitWeighting",
    "PowerWeighting",
    "PriorWeighting",
    "RealtimeWeighting",
    "StaticWeighting",
    "Weighting",
    "WeightingOptions",
    "build_weighting",
    "describe_weightings",
    "get_weighting_class",
    "register",
    "validate_weighting_name",
    "AlignedMTLWeighting",
    "CAGradWeighting",
    "DynamicWeightAverage",
    "FAMOWeighting",
    "GradNormWeighting",
    "RandomWeighting",
    "UncertaintyWeighting",
    "DBMTLWeighting",
    "IMTLGWeighting",
    "MGDAWeighting",
    "NashMTLWeighting",
    "PCGradWeighting",
    "UPGradWeighting",
]
