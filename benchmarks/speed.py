"""Speed and memory of ``ghn_init.apply`` against each model's own default initialization.

    python benchmarks/speed.py                            # the default models, GHN-3-T fixture layout
    python benchmarks/speed.py --models resnet50 timm/resnet50 --runs 7
    python benchmarks/speed.py --devices cpu cuda --dtypes float32 bfloat16

For every model, each run measures, in the same process and one after the other:

- ``init``: the model's default initialization (``reset_parameters()`` of every module that has it);
- ``trace``: recording the graph (meta tensors) and planning which tensor each node writes;
- ``predict``: the GHN forward pass and the decoding/fitting of every tensor;
- ``write``: writing the predictions into the model;

and reports the median over ``--runs`` runs, each phase also as a ratio to ``init``. Peak extra memory
is the rise of the process's peak RSS during the phase (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. Models with more
parameters than ``--meta-above`` (timm's largest does not fit in RAM) are built on the meta device;
for them only trace and predict (decoding on CPU, nothing written) are measured and no ratio is given.
``--largest-timm`` finds timm's largest model by counting parameters on the meta device (cached).
The table goes to ``docs/speed.md`` and stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from paths import FIXTURES, REPO

GHN_FILES = {"ghn3_t": "ghn3_t_random.joblib", "ghn2": "ghn2_random.pt"}
DEFAULT_MODELS = ["resnet50", "vit_b_16", "efficientnet_b7", "convnext_large", "vit_h_14", "regnet_y_128gf"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ghn_init_bench" / "timm_param_counts.json"


# ---------------------------------------------------------------------------------------------- memory


def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak, or the rise of peak RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mb = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset VmHWM (peak RSS) to the current RSS
            except OSError:
                pass
            self.base = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        else:
            peak = _status_kb("VmHWM")
            if peak is not None and self.base is not None:
                self.mb = max(0, peak - self.base) / 1024


# ---------------------------------------------------------------------------------------------- models


def build(name: str, meta: bool = False) -> torch.nn.Module:
    with torch.device("meta" if meta else "cpu"):
        if name.startswith("timm/"):
            import timm

            return timm.create_model(name[len("timm/") :], pretrained=False)
        import torchvision

        return torchvision.models.get_model(name)


def count_on_meta(name: str) -> int:
    try:
        model = build(name, meta=True)
    except Exception:  # noqa: BLE001 - some models compute their config with tensors: count a real one
        model = build(name)
    return sum(p.numel() for p in model.parameters())


def largest_timm(verbose: bool = True) -> tuple[str, int]:
    """timm's model with the most parameters, counted on the meta device (cached per timm version)."""
    import timm

    counts: dict[str, Any] = {}
    if CACHE.exists():
        data = json.loads(CACHE.read_text())
        if data.get("timm") == timm.__version__:
            counts = data["counts"]
    names = timm.list_models()
    todo = [n for n in names if n not in counts]
    for i, n in enumerate(todo):
        try:
            counts[n] = count_on_meta("timm/" + n)
        except Exception as e:  # noqa: BLE001 - a model that cannot be built on meta is skipped
            counts[n] = f"{type(e).__name__}"
        if verbose and (i + 1) % 200 == 0:
            print(f"  counted {i + 1}/{len(todo)} timm models on meta", flush=True)
    if todo:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps({"timm": timm.__version__, "counts": counts}))
    best = max((n for n in names if isinstance(counts.get(n), int)), key=lambda n: counts[n])
    return "timm/" + best, counts[best]


def default_init(model: torch.nn.Module) -> None:
    for m in model.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


# ---------------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    gc.collect()  # untimed: a full collection (65-90 ms with torch loaded) would otherwise fall in a phase at random
    with PeakMemory(device) as mem:
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        seconds = time.perf_counter() - t
    return seconds, mem.mb, out


def measure(
    name: str, ghn, runs: int, device: torch.device, dtype: torch.dtype, meta_above: Optional[float]
) -> dict[str, Any]:
    import ghn_init

    n_params = count_on_meta(name)
    meta = meta_above is not None and n_params > meta_above
    row: dict[str, Any] = {
        "model": name,
        "params": n_params,
        "device": device.type,
        "dtype": str(dtype).replace("torch.", ""),
    }
    t = time.perf_counter()
    model = build(name, meta=meta)
    if not meta:
        model = model.to(device=device, dtype=dtype)
    row["build_s"] = time.perf_counter() - t
    row["mode"] = "meta (decode only)" if meta else "write"
    net = ghn.to(device if not meta else torch.device("cpu"))
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for _ in range(runs):
        if not meta:
            s, mb, _ = timed(lambda: default_init(model), device)
            add("init", s)
            add("init_mb", mb)
            torch.manual_seed(0)
            s, mb, report = timed(lambda: ghn_init.apply(model, net), device)
            add("apply", s)
            add("apply_mb", mb)
            for k in ("trace", "predict", "write"):
                add(k, report.seconds.get(k, float("nan")))
            row["nodes"], row["predicted"] = report.nodes, report.fraction_predicted
        else:
            # a dry run: every tensor predicted and checked, one at a time, none written
            s, mb, prediction = timed(lambda: ghn_init.predict(model, net, dry_run=True), torch.device("cpu"))
            rep = prediction.report
            add("trace", rep.seconds["trace"])
            add("predict", rep.seconds["predict"])
            add("apply", s)
            add("apply_mb", mb)
            row["nodes"], row["predicted"] = rep.nodes, rep.fraction_predicted
    for k, v in samples.items():
        row[k] = statistics.median(v)
    row["runs"] = runs
    return row


def image_size_scaling(ghn, name: str = "resnet50") -> list[tuple[int, float, int]]:
    """Trace time of one model at growing input sizes (meta recording: should stay flat)."""
    import ghn_init

    model = build(name, meta=True)
    out = []
    for side in (224, 448, 896, 1792):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            g = ghn_init.trace(model, (3, side, side), virtual_edge_cutoff=ghn.virtual_edge_cutoff)
            times.append(time.perf_counter() - t)
        out.append((side, statistics.median(times), len(g.nodes)))
    return out


# ---------------------------------------------------------------------------------------------- output


def _ms(s: float) -> str:
    return "-" if s != s else f"{1000 * s:,.0f}"


def _ratio(x: float, init: Optional[float]) -> str:
    return "-" if not init or x != x else f"{x / init:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | device / dtype | params | nodes | predicted | init ms | trace ms (x init) | predict ms (x init) "
        "| write ms (x init) | **apply ms (x init)** | ms / node | peak extra MB: init / apply |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('device', '')} | | | | | | | | **{r['error'][:120]}** | | |")
            continue
        init = r.get("init")
        lines.append(
            f"| {r['model']}{' (meta, decode only)' if r['mode'] != 'write' else ''} | {r['device']} / {r['dtype']} | "
            f"{r['params'] / 1e6:,.1f}M | {r['nodes']} | {100 * r['predicted']:.1f}% | {_ms(init) if init else '-'} | "
            f"{_ms(r['trace'])} ({_ratio(r['trace'], init)}) | {_ms(r['predict'])} ({_ratio(r['predict'], init)}) | "
            f"{_ms(r.get('write', float('nan')))} ({_ratio(r.get('write', float('nan')), init)}) | "
            f"**{_ms(r['apply'])} ({_ratio(r['apply'], init)})** | {1000 * r['apply'] / max(1, r['nodes']):.2f} | "
            f"{r.get('init_mb', float('nan')):,.0f} / {r.get('apply_mb', float('nan')):,.0f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--largest-timm", action="store_true", help="also time timm's largest model (found on meta)")
    ap.add_argument("--ghn", choices=sorted(GHN_FILES), default="ghn3_t")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--devices", nargs="*", default=["cpu", "cuda"], help="cuda is skipped where unavailable")
    ap.add_argument("--dtypes", nargs="*", default=["float32"], help="also: float16 bfloat16 (CUDA/CPU as supported)")
    ap.add_argument("--meta-above", type=float, default=2e9, help="build larger models on meta; decode only")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--scaling", action="store_true", help="also trace resnet50 at growing image sizes")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "speed.md")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    from ghn_init.hub.checkpoints import load_file

    ghn = load_file(FIXTURES / GHN_FILES[args.ghn]).eval()
    for p in ghn.parameters():
        p.requires_grad_(False)
    models = list(args.models)
    if args.largest_timm:
        name, n = largest_timm()
        print(f"timm's largest model: {name} ({n / 1e9:.2f}B parameters on meta)", flush=True)
        models.append(name)
    devices = [torch.device(d) for d in args.devices if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    rows = []
    for device in devices:
        for dt in args.dtypes:
            dtype = getattr(torch, dt)
            if dtype in (torch.float16,) and device.type == "cpu":
                pass  # fp16 on CPU works for writing; the GHN itself runs in float32
            for name in models:
                print(f"{name} on {device.type}/{dt} ...", flush=True)
                try:
                    rows.append(measure(name, ghn, args.runs, device, dtype, args.meta_above))
                except Exception as e:  # noqa: BLE001 - report and go on
                    rows.append({"model": name, "device": f"{device.type}/{dt}", "error": f"{type(e).__name__}: {e}"})
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    scaling = image_size_scaling(ghn) if args.scaling else []

    cpu = platform.processor() or platform.machine()
    lines = [
        "# Speed: `ghn_init.apply` vs the model's own default initialization",
        "",
        f"Generated by `python benchmarks/speed.py` on {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; GHN: {args.ghn} fixture layout. Median of {args.runs} runs per "
        "model; every phase is also given as a ratio to `init` (calling `reset_parameters()` of every module) "
        "measured in the same run on the same model, the garbage collector run (untimed) before each. `apply` = "
        "trace + predict + write (plus bookkeeping). "
        "Peak extra memory: rise of peak RSS during the phase on CPU (`VmHWM`), allocator peak on CUDA. "
        "The machine was shared with other jobs, so single timings are noisy; ratios are the more stable number.",
        "",
        table(rows),
        "",
    ]
    if scaling:
        lines += [
            "Tracing cost vs image size (resnet50, recorded on meta tensors: no activations are computed):",
            "",
            "| input | trace ms | nodes |",
            "|---|---|---|",
        ]
        lines += [f"| {s}x{s} | {1000 * t:.0f} | {n} |" for s, t, n in scaling]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text() if args.out.exists() else ""
    kept = old[old.index("\n## ") + 1 :] if "\n## " in old else ""  # sections other benchmarks write
    args.out.write_text(text + "\n" + ("\n" + kept if kept else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
