"""Compare initialization schemes on one architecture: default, orthogonal and GHNs.

    python examples/compare_inits.py --model resnet18 --ghn bundled --ghn /path/to/ghn3tm8.pt

For each scheme it builds the model with the same seed, initializes it, and prints statistics a
practitioner looks at before training (parameter norm, output scale on random images). To compare
accuracy, train each initialized model with your own loop; ``benchmarks/init_quality.py`` does
that for the bundled GHN on a small dataset.
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn as nn

import ghn_init
from ghn_init.models import create_model


def orthogonal_(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def schemes(ghns: list[str]) -> dict[str, Callable[[nn.Module], None]]:
    out: dict[str, Callable[[nn.Module], None]] = {"default": lambda m: None, "orthogonal": orthogonal_}
    for source in ghns:
        ghn = ghn_init.load_ghn(source)  # loaded once, reused for every model
        out[f"ghn:{source}"] = lambda m, ghn=ghn: ghn_init.apply(m, ghn)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--ghn", action="append", default=[], help="GHN source (repeatable); default: bundled")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed))
    print(f"{'scheme':28s} {'param norm':>12s} {'logit std':>10s}")
    for name, init in schemes(args.ghn or ["bundled"]).items():
        torch.manual_seed(args.seed)
        model = create_model(args.model)
        init(model)
        norm = torch.norm(torch.stack([p.detach().norm() for p in model.parameters()])).item()
        with torch.no_grad():
            std = model.eval()(x).std().item()
        print(f"{name:28s} {norm:12.3f} {std:10.4f}")


if __name__ == "__main__":
    main()
