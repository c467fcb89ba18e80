"""What the bundled GHN's recommended post-processing costs, against the ``orthogonal`` scheme (its floor).

    python benchmarks/postprocess_speed.py                       # speed.py's models, convnext_tiny, mobilenet_v3_large
    python benchmarks/postprocess_speed.py --models resnet18 --runs 5
    python benchmarks/postprocess_speed.py --profile             # where the post-processing's time goes

For every model, each run times, one after the other in the same process on a freshly built model:

- ``raw``: ``apply(model, "bundled", postprocess="none")`` (record, predict, write);
- ``recommended``: ``apply(model, "bundled")`` (the GHN's recommended post-processing);
- ``orthogonal``: the ``orthogonal`` init scheme on the same model (one QR per weight matrix).

It reports medians and ``(recommended - raw) / orthogonal``, the post-processing's cost in orthogonal inits
(issue 20's target: at most 1.25). One torch thread. On a machine shared with other jobs the absolute times move
between runs; the three phases are interleaved so their ratio moves less.

``--profile`` instead profiles (cProfile) the recommended apply: per model, the post-processing's time split into
the QR factorizations, the noise scale (``relative_noise_scale``), the random draws (``torch.randn``: ``detile``'s
fill and the noise) and the rest (``dcbalance``, ``detile``'s other steps, sums, layout and dtype copies), next to
the ``orthogonal`` scheme timed in the same process; medians of ``--runs`` profiled applies.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

# benchmarks/speed.py's models (issue 20 holds post-processing to 1.25 orthogonal inits on each), then two smaller
# ones whose many small matrices make per-call overhead count (regnet_y_128gf and vit_h_14: minutes each)
DEFAULT_MODELS = [
    "resnet50", "vit_b_16", "efficientnet_b7", "convnext_large", "vit_h_14", "regnet_y_128gf",
    "convnext_tiny", "mobilenet_v3_large",
]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, runs: int) -> dict[str, float]:
    import ghn_init
    from ghn_init.models import create_model

    orthogonal = ghn_init.get_scheme("orthogonal")
    ghn_init.apply(create_model(name), "bundled")  # warm-up: loads the GHN, first-call allocations
    times: dict[str, list[float]] = {"raw": [], "recommended": [], "orthogonal": []}
    for _ in range(runs):
        times["raw"].append(_timed(lambda: ghn_init.apply(create_model(name), "bundled", postprocess="none")))
        times["recommended"].append(_timed(lambda: ghn_init.apply(create_model(name), "bundled")))
        model = create_model(name)
        times["orthogonal"].append(_timed(lambda m=model: orthogonal(m)))
    med = {k: statistics.median(v) for k, v in times.items()}
    med["ratio"] = (med["recommended"] - med["raw"]) / med["orthogonal"]
    return med


def profile(name: str, runs: int) -> dict[str, float]:
    import cProfile
    import pstats

    import ghn_init
    from ghn_init.models import create_model

    def seconds(stats: pstats.Stats, function: str, cumulative: bool) -> float:
        return sum(ct if cumulative else tt for (_, _, fn), (_, _, tt, ct, _) in stats.stats.items() if fn == function)

    ghn_init.apply(create_model(name), "bundled")
    rows: dict[str, list[float]] = {k: [] for k in ("total", "qr", "scale", "draws", "rest", "orthogonal")}
    for _ in range(runs):
        model = create_model(name)
        prof = cProfile.Profile()
        prof.enable()
        ghn_init.apply(model, "bundled")
        prof.disable()
        stats = pstats.Stats(prof)
        total = seconds(stats, "postprocess_predictions", True)
        parts = {
            "qr": seconds(stats, "<built-in method torch._C._linalg.linalg_qr>", False),
            "scale": seconds(stats, "relative_noise_scale", True),
            "draws": seconds(stats, "<built-in method torch.randn>", False),
        }
        model = create_model(name)
        parts["orthogonal"] = _timed(lambda m=model: ghn_init.get_scheme("orthogonal")(m))
        parts["total"] = total
        parts["rest"] = total - parts["qr"] - parts["scale"] - parts["draws"]
        for k, v in parts.items():
            rows[k].append(v)
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="split the post-processing's time (cProfile)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.profile:
        print("| model | post-processing (s) | QR | noise scale | random draws | rest | orthogonal scheme (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in args.models:
            p = profile(name, args.runs)
            cells = [p[k] for k in ("total", "qr", "scale", "draws", "rest", "orthogonal")]
            print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)
        return
    print("| model | raw apply (s) | recommended apply (s) | orthogonal scheme (s) | post-processing / orthogonal |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        m = measure(name, args.runs)
        print(f"| {name} | {m['raw']:.2f} | {m['recommended']:.2f} | {m['orthogonal']:.2f} | {m['ratio']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
