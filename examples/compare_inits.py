"""Compare init schemes by fine-tuning: default, orthogonal, the bundled GHN, and one of your own.

    pip install 'ghn-init[compare]'
    python examples/compare_inits.py --model resnet18 --steps 100 --seeds 0,1 --out runs/compare

Every scheme is a callable ``(model) -> None`` that initializes the model in place; the built-in
names (``default``, ``orthogonal``, ``ghn:SOURCE[+POSTPROCESS]``) and your own callables mix freely.
``ghn_init.compare`` gives every scheme the same data order and the same untouched tensors per seed,
re-estimates BatchNorm statistics before each test, and writes results.json, results.md and curves.png.
The same from the command line: ``ghn-init compare --models resnet18 --inits default,orthogonal,ghn:bundled``.
"""

from __future__ import annotations

import argparse

import torch.nn as nn

import ghn_init


def kaiming_(model: nn.Module) -> None:
    """A user-defined scheme: Kaiming-normal conv/linear weights, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--ghn", default="bundled", help="GHN source for the ghn scheme")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    args = parser.parse_args()
    inits = {
        "default": "default",
        "orthogonal": "orthogonal",
        "kaiming": kaiming_,
        f"ghn:{args.ghn}": f"ghn:{args.ghn}",
    }
    results = ghn_init.compare(
        [args.model], inits, "digits", steps=args.steps, seeds=[int(s) for s in args.seeds.split(",")], out=args.out,
        overwrite=args.overwrite,
    )
    print(results.markdown(plot=None))


if __name__ == "__main__":
    main()
