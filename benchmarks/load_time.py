"""How long loading a GHN takes: the published pickle versus the safetensors folder `ghn-init convert` writes.

    python benchmarks/load_time.py [CHECKPOINT] [--repeats 5]

CHECKPOINT defaults to the GHN-3-T/m8 reference fixture (same keys and shapes as the Hub's ghn3tm8.pt).
Each load builds the GHN from scratch (no in-process cache); the median of the repeats is reported, with
the part spent reading the tensors from the file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from paths import FIXTURES
from safetensors.torch import load_file as read_safetensors

from ghn_init.hub.checkpoints import load_file
from ghn_init.hub.convert import convert
from ghn_init.hub.safe_pickle import load_pickle

DEFAULT_CHECKPOINT = FIXTURES / "ghn3_t_random.joblib"


def median_seconds(load: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.checkpoint.exists():
        print(f"no checkpoint at {args.checkpoint}; pass one or set GHN_INIT_FIXTURES", file=sys.stderr)
        return 1

    torch.set_num_threads(1)  # comparable numbers on a busy machine
    with tempfile.TemporaryDirectory() as tmp:
        folder = convert(args.checkpoint, Path(tmp) / "converted")
        load_file(args.checkpoint), load_file(folder)  # warm the OS file cache and torch's lazy imports
        results = {
            f"pickle ({args.checkpoint.name}, {args.checkpoint.stat().st_size / 1e6:.1f} MB)": median_seconds(
                lambda: load_file(args.checkpoint), args.repeats
            ),
            f"safetensors folder ({(folder / 'model.safetensors').stat().st_size / 1e6:.1f} MB)": median_seconds(
                lambda: load_file(folder), args.repeats
            ),
            "  of which reading the pickle's tensors": median_seconds(
                lambda: load_pickle(args.checkpoint), args.repeats
            ),
            "  of which reading model.safetensors": median_seconds(
                lambda: read_safetensors(str(folder / "model.safetensors")), args.repeats
            ),
        }
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, median of {args.repeats} loads (GHN built each time)")
    for label, (median, times) in results.items():
        print(f"  {label:<45} {median * 1000:8.1f} ms   (all: {', '.join(f'{t * 1000:.0f}' for t in times)} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
