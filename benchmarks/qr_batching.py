"""Does factorizing same-shape matrices together (batched QR) make post-processing cheaper on the CPU?

    python benchmarks/qr_batching.py            # the shapes of vit_b_16's weight matrices, one torch thread

For each shape (as many matrices as vit_b_16 has of it, seen tall as post-processing and ``orthogonal_`` see them)
it times, best of ``--runs``:

- ``loop``: one ``torch.linalg.qr`` per matrix, row-major input (torch copies it to LAPACK's column-major layout);
- ``loop, column-major``: the same, the column-major copy made beforehand (included in the time);
- ``batched``: one ``torch.linalg.qr`` of the stack (``(count, rows, cols)``), row-major and column-major;
- ``float64``: the loop in float64 (what a float64 model pays);
- ``Gram``: ``M^T M`` of each (the noise scale's cost, full product) and ``randn`` of each (one draw).

Written for issue 20 ("same-shape matrices factorized together"): on one CPU thread the batched call runs the same
LAPACK routine once per matrix, so it can only save Python overhead, which is negligible next to the factorization.
"""

from __future__ import annotations

import argparse
import time

import torch

# vit_b_16's weight matrices as (out, in * k * k) and how many of each
SHAPES = [((3072, 768), 12), ((2304, 768), 12), ((768, 768), 13), ((768, 3072), 12)]


def best_ms(fn, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def tall(m: torch.Tensor) -> torch.Tensor:
    return m if m.shape[0] >= m.shape[1] else m.t()


def column_major(m: torch.Tensor) -> torch.Tensor:
    return m if m.transpose(-2, -1).is_contiguous() else m.transpose(-2, -1).contiguous().transpose(-2, -1)


def measure(shape: tuple[int, int], count: int, g: torch.Generator, runs: int) -> list[float]:
    mats = [torch.randn(shape, generator=g) for _ in range(count)]
    stack = torch.stack([tall(m).contiguous() for m in mats])
    return [
        best_ms(lambda: [torch.linalg.qr(tall(m)) for m in mats], runs),
        best_ms(lambda: [torch.linalg.qr(column_major(tall(m))) for m in mats], runs),
        best_ms(lambda: torch.linalg.qr(stack), runs),
        best_ms(lambda: torch.linalg.qr(column_major(stack)), runs),
        best_ms(lambda: [torch.linalg.qr(tall(m).double()) for m in mats], 1),
        best_ms(lambda: [tall(m).t() @ tall(m) for m in mats], runs),
        best_ms(lambda: [torch.randn(shape, generator=g) for _ in mats], runs),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print("| shape (out, in) x count | loop ms | loop, column-major ms | batched ms | batched, column-major ms "
          "| float64 loop ms | Gram ms | randn ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = [0.0] * 7
    for shape, count in SHAPES:
        cells = measure(shape, count, g, args.runs)
        totals = [t + c for t, c in zip(totals, cells, strict=True)]
        print(f"| {shape} x {count} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |", flush=True)
    print("| **all 49** | " + " | ".join(f"**{c:,.0f}**" for c in totals) + " |")


if __name__ == "__main__":
    main()
