"""How the task losses are balanced: the registry and one module per strategy.

`--weighting NAME` picks a class from `WEIGHTINGS`; `build_weighting` instantiates it. Importing this
package registers every strategy below (in this order, which `hf-mtl weightings` lists). Each strategy
declares its own hyperparameters (a nested `Config`, see `WeightingConfig`); the registry derives the
`hf-mtl train` flags from them (`hparam_flags`, `hparams_dataclass`).
"""

from .base import AggregatorWeighting, GradientWeighting, Weighting, WeightingConfig
from .registry import (
    WEIGHTINGS,
    HparamFlag,
    build_weighting,
    check_weighting,
    describe_weightings,
    get_weighting_class,
    hparam_flags,
    hparams_dataclass,
    register,
    validate_weighting_name,
    weighting_classes,
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
from .imtl_l import IMTLLWeighting
from .imtl_h import IMTLHybridWeighting
from .stch import STCHWeighting
from .gradvac import GradVacWeighting
from .graddrop import GradDropWeighting
from .conflict_free import ConFIGWeighting
from .dualproj import DualProjWeighting
from .fairgrad import FairGradWeighting
from .sdmgrad import SDMGradWeighting
from .moco import MoCoWeighting
from .excess_mtl import ExcessMTLWeighting
# isort: on

__all__ = [
    "WEIGHTINGS",
    "AggregatorWeighting",
    "AlignedMTLWeighting",
    "CAGradWeighting",
    "ConFIGWeighting",
    "DBMTLWeighting",
    "DualProjWeighting",
    "DynamicWeightAverage",
    "EqualWeighting",
    "ExcessMTLWeighting",
    "FAMOWeighting",
    "FairGradWeighting",
    "GeometricWeighting",
    "GradDropWeighting",
    "GradNormWeighting",
    "GradNormalizeWeighting",
    "GradVacWeighting",
    "GradientWeighting",
    "HparamFlag",
    "IMTLGWeighting",
    "IMTLHybridWeighting",
    "IMTLLWeighting",
    "InitWeighting",
    "MGDAWeighting",
    "MoCoWeighting",
    "NashMTLWeighting",
    "PCGradWeighting",
    "PowerWeighting",
    "PriorWeighting",
    "RandomWeighting",
    "RealtimeWeighting",
    "SDMGradWeighting",
    "STCHWeighting",
    "StaticWeighting",
    "UPGradWeighting",
    "UncertaintyWeighting",
    "Weighting",
    "WeightingConfig",
    "build_weighting",
    "check_weighting",
    "describe_weightings",
    "get_weighting_class",
    "hparam_flags",
    "hparams_dataclass",
    "register",
    "validate_weighting_name",
    "weighting_classes",
]
