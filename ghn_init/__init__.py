"""ghn-init: initialize PyTorch vision models with parameters predicted by Graph HyperNetworks.

    import ghn_init
    report = ghn_init.apply(model)          # one line before training
    print(report)
"""

from .api import Report, StrictError, apply
from .graph import PRIMITIVES, Graph, TraceError, register_module, trace
from .hub import list_ghns, load_ghn
from .harness import Results as CompareResults
from .harness import compare
from .networks import GHN, GHNConfig
from .postprocess import PostProcess
from .recalibrate import recalibrate_bn

__version__ = "0.1.0"

__all__ = [
    "apply",
    "compare",
    "CompareResults",
    "PostProcess",
    "recalibrate_bn",
    "load_ghn",
    "list_ghns",
    "trace",
    "register_module",
    "Report",
    "Graph",
    "GHN",
    "GHNConfig",
    "PRIMITIVES",
    "StrictError",
    "TraceError",
    "__version__",
]
