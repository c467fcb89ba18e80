"""Does the cost of ``ghn_init.apply`` grow as the work grows? Time and peak extra memory against model size.

    python benchmarks/scaling.py                       # 24 torchvision/timm models, writes docs/speed.md + png
    python benchmarks/scaling.py --models resnet18 vit_b_16 --runs 1 --no-write

For every model (built outside the timer, on CPU, float32), each run measures the offline path
``ghn_init.apply(model, "bundled")`` (the bundled GHN with its recommended post-processing) and the model's own
``reset_parameters()`` (``init``): wall time, CPU time of this process (``time.process_time``: with one torch
thread it equals the wall time on a quiet machine and does not grow when other jobs share the cores) and the rise
of peak RSS (Linux ``VmHWM``). The medians are fitted against the parameter count on log-log axes: a slope of 1
means the cost grows in proportion to the model; the page gives the slope with a 95% interval.

Then ``apply`` on a list of models (one recording per model, one batched GHN pass over all their graphs) against
applying them one by one, in models per second.

Results go to ``docs/speed.md`` (section "Cost against model size", replaced in place), ``docs/speed_scaling.png``
(with matplotlib) and stdout.
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from paths import REPO
from speed import PeakMemory, build, default_init
from vs_published import write_section

MODELS = [
    "squeezenet1_1", "shufflenet_v2_x1_0", "mobilenet_v3_small", "mnasnet1_0", "mobilenet_v3_large",
    "efficientnet_b0", "timm/convnext_atto", "resnet18", "regnet_y_1_6gf", "densenet121", "timm/efficientnet_b2",
    "resnet50", "swin_t", "convnext_tiny", "timm/vit_small_patch16_224", "efficientnet_b7", "resnet152",
    "vit_b_16", "wide_resnet101_2", "vgg16", "convnext_large", "vit_l_16", "vit_h_14", "regnet_y_128gf",
]  # fmt: skip
LIST_MODELS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet1_0"]
SECTION = "## Cost against model size"


def _measure(fn: Callable[[], Any]) -> tuple[float, float, float]:
    # untimed, as in speed.py and vs_published.py: a full collection (65-90 ms with torch loaded) would otherwise
    # fall into whichever call crosses the collector's threshold (shufflenet_v2_x1_0's apply: 95 ms, or 202 ms)
    gc.collect()
    with PeakMemory(torch.device("cpu")) as mem:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, mem.mb


def measure(name: str, runs: int) -> dict[str, Any]:
    import ghn_init

    model = build(name)
    row: dict[str, Any] = {"model": name, "params": sum(p.numel() for p in model.parameters())}
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        phases = (("init", lambda m=model: default_init(m)), ("apply", lambda m=model: ghn_init.apply(m, "bundled")))
        for key, fn in phases:
            wall, cpu, mb = _measure(fn)
            samples.setdefault(f"{key}_s", []).append(wall)
            samples.setdefault(f"{key}_cpu_s", []).append(cpu)
            samples.setdefault(f"{key}_mb", []).append(mb)
    row.update({k: statistics.median(v) for k, v in samples.items()})
    del model
    return row


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float, float]:
    """Least squares of log y on log x: (slope, its 95% half-width, intercept, R^2)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    n = len(lx)
    mx, my = sum(lx) / n, sum(ly) / n
    sxx = sum((x - mx) ** 2 for x in lx)
    slope = sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / sxx
    intercept = my - slope * mx
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(lx, ly, strict=True))
    total = sum((y - my) ** 2 for y in ly)
    from ghn_init.harness.stats import t_quantile

    half = t_quantile(n - 2) * math.sqrt(residual / (n - 2) / sxx)
    return slope, half, intercept, 1 - residual / total


def list_apply(names: list[str], runs: int) -> dict[str, float]:
    """Models per second: apply on the list at once vs one by one (fresh models each run, built untimed)."""
    import ghn_init

    ghn_init.apply(build(names[0]), "bundled")  # warm-up: the GHN is loaded and cached
    together, alone = [], []
    for _ in range(runs):
        models = [build(n) for n in names]
        gc.collect()  # untimed (see _measure)
        start = time.perf_counter()
        ghn_init.apply(models, "bundled")
        together.append(time.perf_counter() - start)
        models = [build(n) for n in names]
        gc.collect()
        start = time.perf_counter()
        for m in models:
            ghn_init.apply(m, "bundled")
        alone.append(time.perf_counter() - start)
    return {
        "models": len(names),
        "together_s": statistics.median(together),
        "alone_s": statistics.median(alone),
    }


def page(rows: list[dict[str, Any]], fits: dict[str, tuple], lists: dict[str, float], args) -> str:
    lines = [
        SECTION,
        "",
        f"Generated by `python benchmarks/scaling.py{' ' + ' '.join(args.argv) if args.argv else ''}` on "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), median of "
        f"{args.runs} run(s), the garbage collector run (untimed) before each timed call; `apply(model, 'bundled')`: "
        "the bundled GHN with its recommended post-processing. "
        "CPU time is this process's (`time.process_time`), which other jobs on the machine do not inflate; peak "
        "extra memory is the rise of peak RSS during the call (a model measured after a larger one can show 0-1 MB: "
        "the allocator reused memory the process already held).",
        "",
        "| model | params | init s | apply s (wall) | apply s (CPU) | apply / init | apply peak extra MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: r["params"]):
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['init_s']:.3f} | {r['apply_s']:.3f} | "
            f"{r['apply_cpu_s']:.3f} | {r['apply_s'] / r['init_s']:.1f} | {r['apply_mb']:,.0f} |"
        )
    lines += ["", "Fitted on log-log axes against the parameter count (slope 1: cost proportional to size):", ""]
    lines += ["| quantity | slope | 95% interval | R² |", "|---|---:|---|---:|"]
    for label, (slope, half, _, r2) in fits.items():
        lines.append(f"| {label} | {slope:.2f} | [{slope - half:.2f}, {slope + half:.2f}] | {r2:.2f} |")
    if lists:
        n = lists["models"]
        lines += [
            "",
            f"`apply` on a list of {n} models ({', '.join(LIST_MODELS[:n])}; one batched GHN pass) "
            f"{n / lists['together_s']:.2f} models/s against one by one {n / lists['alone_s']:.2f} models/s "
            f"({lists['together_s']:.2f} s vs {lists['alone_s']:.2f} s).",
        ]
    if args.plot:
        lines += ["", "![apply time and peak memory against model size](speed_scaling.png)"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], fits: dict[str, tuple], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    params = [r["params"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "apply_cpu_s", "apply CPU time (s)"), (axes[1], "apply_mb", "peak extra MB")):
        ys = [max(r[key], 1e-3) for r in rows]
        ax.loglog(params, ys, "o", label="models")
        for r, y in zip(rows, ys, strict=True):
            ax.annotate(r["model"].replace("timm/", ""), (r["params"], y), fontsize=6, alpha=0.7)
        if label in fits:
            slope, _, intercept, _ = fits[label]
            xs = [min(params), max(params)]
            ax.loglog(xs, [math.exp(intercept) * x**slope for x in xs], "-", label=f"fit: slope {slope:.2f}")
        ax.set_xlabel("parameters")
        ax.set_ylabel(label)
        ax.legend()
    axes[0].loglog(params, [r["init_cpu_s"] for r in rows], "x", color="gray", label="reset_parameters()")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--list-runs", type=int, default=3, help="runs of the list-vs-one-by-one comparison (0: skip)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", dest="write", action="store_false", help="print only")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "speed.md")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    torch.set_num_threads(args.threads)
    import ghn_init

    ghn_init.apply(build("resnet18"), "bundled")  # warm-up: loads the bundled GHN once
    rows = []
    for name in args.models:
        row = measure(name, args.runs)
        rows.append(row)
        print(
            f"{name}: {row['params'] / 1e6:.1f}M params, apply {row['apply_s']:.2f} s wall / "
            f"{row['apply_cpu_s']:.2f} s CPU, init {row['init_s']:.3f} s, peak +{row['apply_mb']:.0f} MB",
            flush=True,
        )
    params = [r["params"] for r in rows]
    fits = {}
    if len(rows) >= 3:
        fits["apply CPU time (s)"] = fit(params, [r["apply_cpu_s"] for r in rows])
        fits["apply wall time (s)"] = fit(params, [r["apply_s"] for r in rows])
        fits["peak extra MB"] = fit(params, [max(r["apply_mb"], 1.0) for r in rows])
        fits["init CPU time (s), for comparison"] = fit(params, [max(r["init_cpu_s"], 1e-4) for r in rows])
    lists = list_apply(LIST_MODELS, args.list_runs) if args.list_runs else {}
    args.plot = args.write and plot(rows, fits, args.out.with_name("speed_scaling.png"))
    text = page(rows, fits, lists, args)
    print(text)
    if args.write:
        write_section(args.out, text, SECTION)


if __name__ == "__main__":
    main()
