"""ghn-init: initialize PyTorch models with parameters predicted by Graph HyperNetworks.

    import ghn_init
    report = ghn_init.apply(model)          # one line before training
    print(report)

The pipeline behind ``apply`` is public, one stage per function:
``trace`` (model -> graph), ``plan`` (graph -> which tensor each node predicts),
``predict`` (model -> :class:`Prediction`, nothing written) and ``Prediction.write()`` / ``write``.
"""

from .api import Prediction, apply, predict, write
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    CorruptDownloadError,
    GHNInitError,
    HubDownloadError,
    HubFileNotFoundError,
    HubUploadError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    PeerProcessError,
    PredictionError,
    StrictError,
    TraceError,
    UnknownGHNError,
    UnknownModelError,
    UnsafeCheckpointError,
    UnsupportedDtypeError,
    UnsupportedModelError,
    WriteError,
)
from .graph import PRIMITIVES, Graph, register_module, trace
from .harness import Results as CompareResults
from .harness import compare
from .hub import list_ghns, load_ghn
from .hub.push import push_to_hub
from .networks import GHN, GHNConfig
from .planning import Plan, plan
from .postprocess import PostProcess
from .recalibrate import recalibrate_bn
from .report import Report
from .saving import save_safetensors
from .schemes import SchemeReport, get_scheme, list_schemes, register_scheme

__version__ = "0.1.0"

__all__ = [
    "apply",
    "compare",
    "list_schemes",
    "register_scheme",
    "get_scheme",
    "SchemeReport",
    "CompareResults",
    "PostProcess",
    "recalibrate_bn",
    "predict",
    "write",
    "trace",
    "plan",
    "load_ghn",
    "list_ghns",
    "push_to_hub",
    "register_module",
    "save_safetensors",
    "Prediction",
    "Plan",
    "Report",
    "Graph",
    "GHN",
    "GHNConfig",
    "PRIMITIVES",
    "GHNInitError",
    "TraceError",
    "StrictError",
    "PredictionError",
    "WriteError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "UnsafeCheckpointError",
    "UnknownGHNError",
    "UnknownModelError",
    "HubDownloadError",
    "HubFileNotFoundError",
    "CorruptDownloadError",
    "HubUploadError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "UnsupportedModelError",
    "PeerProcessError",
    "UnsupportedDtypeError",
    "__version__",
]
