"""GHN networks: GHN-2 (gated GNN) and GHN-3 (Graphormer) with shared encoders and decoders."""

from .config import GHN2, GHN3, GHNConfig
from .ghn import GHN

__all__ = ["GHN", "GHNConfig", "GHN2", "GHN3"]
