"""What the GHN-3-XL/m16 layout costs on CPU: time and peak memory of ``ghn_init.apply``.

    python benchmarks/ghn3_xl.py                     # resnet50 and vit_b_16, median of 3, 1 thread
    python benchmarks/ghn3_xl.py --models resnet18 --runs 5 --threads 2
    python benchmarks/ghn3_xl.py --models resnet50 --profile --no-write   # where one apply's time goes

The real ``ghn3xlm16.pt`` is a 2.5 GB download, so this builds a GHN with the same layout and random
weights (the cost of a forward pass does not depend on the values). The layout follows the published
code: ``GHN3(hid=384, layers=24, heads=16, max_shape=(hid, hid, 16, 16))`` - ``from_pretrained``
gives GHN-3 ``heads = 16 if hid > 64 else 8`` and ``train_ghn_ddp.py`` the ImageNet default
``max_shape = (hid, hid, 16, 16)``; hid 384 and 24 layers are GHN-3-XL's in the GHN-3 paper
(Knyazev et al., ICML 2023, Table 1: 654M parameters), which this layout reproduces. The GHN-3-T/m8
layout (the reference fixture, 6.9M parameters) is measured the same way for comparison.

Memory is the rise of the process's peak RSS (``VmHWM``, reset before each phase): for "GHN" the
building of the GHN, for "apply" the extra memory of one apply on top of the GHN and the model.
Results go to ``docs/speed.md`` (section "GHN-3-XL/m16 on CPU") and stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paths import FIXTURES, REPO  # noqa: E402
from speed import PeakMemory  # noqa: E402 - the sibling benchmark's peak-RSS meter
from vs_published import write_section  # noqa: E402

SECTION = "## GHN-3-XL/m16 on CPU"
XL = dict(kind="ghn3", hid=384, layers=24, heads=16, max_shape=(384, 384, 16, 16), num_classes=1000)


def build_xl() -> torch.nn.Module:
    from ghn_init.networks import GHN, GHNConfig

    torch.manual_seed(0)
    return GHN(GHNConfig(**XL)).eval()  # default PyTorch init: random weights in the published shapes


def build_t() -> torch.nn.Module:
    from ghn_init.hub.checkpoints import load_file

    return load_file(FIXTURES / "ghn3_t_random.joblib").eval()


def measured(fn: Callable[[], Any]) -> tuple[float, float, float, Any]:
    """(wall s, CPU s, peak extra MB, result) of ``fn()``."""
    cpu = torch.device("cpu")
    with PeakMemory(cpu) as mem:
        wall, proc = time.perf_counter(), time.process_time()
        out = fn()
        wall, proc = time.perf_counter() - wall, time.process_time() - proc
    return wall, proc, mem.mb, out


def run(name: str, ghn_name: str, build: Callable[[], torch.nn.Module], models: list[str], runs: int) -> list[dict]:
    import torchvision

    import ghn_init

    wall, _, mb, ghn = measured(build)
    n_params = sum(p.numel() for p in ghn.parameters())
    print(f"{ghn_name}: {n_params / 1e6:,.1f}M parameters, built in {wall:.1f} s, {mb:,.0f} MB", flush=True)
    rows = []
    for model_name in models:
        torch.manual_seed(0)
        model = torchvision.models.get_model(model_name)
        samples = [measured(lambda m=model, g=ghn: ghn_init.apply(m, g)) for _ in range(runs)]
        report = samples[-1][3]
        row = {
            "ghn": ghn_name,
            "ghn_params": n_params,
            "ghn_mb": mb,
            "model": model_name,
            "apply_s": statistics.median(s[0] for s in samples),
            "apply_cpu_s": statistics.median(s[1] for s in samples),
            "apply_mb": max(s[2] for s in samples),
            "trace_s": report.seconds.get("trace", float("nan")),
            "predict_s": report.seconds.get("predict", float("nan")),
            "predicted": report.fraction_predicted,
        }
        rows.append(row)
        print(
            f"  {model_name}: apply {row['apply_s'] * 1000:,.0f} ms (CPU {row['apply_cpu_s'] * 1000:,.0f} ms), "
            f"peak extra {row['apply_mb']:,.0f} MB",
            flush=True,
        )
    return rows


# (label, module, attribute): the functions whose inclusive time makes each phase (none calls another)
_PHASES = (
    ("shape embeddings", "ghn_init.networks.shape_encoder", "ShapeEncoder.forward"),
    ("graph transformer (Graphormer layers)", "ghn_init.networks.graphormer", "Graphormer.forward"),
    ("decoders (weight decoder, 1-D decoder)", "ghn_init.networks.ghn", "GHN._decode"),
    ("decoders (weight decoder, 1-D decoder)", "ghn_init.networks.decoders", "WeightDecoder.decode_needed"),
    ("crop, tile, scale (fit_to_shape)", "ghn_init.networks.ghn", "fit_to_shape"),
)


@contextlib.contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Wrap the functions of :data:`_PHASES` (where they exist) to add up their wall time per phase."""
    import importlib

    totals: dict[str, float] = {}
    undo = []
    for label, module_name, attr in _PHASES:
        owner: Any = importlib.import_module(module_name)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if fn is None:
            continue

        def timed(*args: Any, _fn: Callable = fn, _label: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                totals[_label] = totals.get(_label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        undo.append((owner, name, fn))
    try:
        yield totals
    finally:
        for owner, name, fn in reversed(undo):
            setattr(owner, name, fn)


def profile(ghn: torch.nn.Module, model_name: str, runs: int) -> str:
    """A markdown table: one apply's wall time per phase (median over ``runs``) and the GHN's matmul FLOPs."""
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    import ghn_init

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name)
    ghn_init.apply(model, ghn)  # warm
    samples = []
    for _ in range(runs):
        with phase_timer() as totals:
            start = time.perf_counter()
            report = ghn_init.apply(model, ghn)
            total = time.perf_counter() - start
        row = dict(totals)
        row["trace and plan"] = report.seconds["trace"]
        row["rest (GHN bookkeeping, finiteness check, post-processing, writing)"] = total - sum(row.values())
        row["total apply"] = total
        samples.append(row)
    with FlopCounterMode(display=False) as flops:
        ghn_init.apply(model, ghn)
    counts = flops.get_flop_counts()
    gnn = sum(counts.get("GHN.gnn", {}).values())
    total_flops = flops.get_total_flops()
    lines = [f"| {model_name}: phase | ms |", "|---|---|"]
    for label in samples[0]:
        lines.append(f"| {label} | {statistics.median(s.get(label, 0.0) for s in samples) * 1000:,.0f} |")
    lines.append(
        f"| matmul GFLOP executed: all / graph transformer / rest (decoders) | {total_flops / 1e9:.1f} / "
        f"{gnn / 1e9:.1f} / {(total_flops - gnn) / 1e9:.1f} |"
    )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = [
        "| GHN layout | GHN parameters | GHN memory MB | model | apply ms (CPU ms) | of which predict ms "
        "| peak extra MB during apply |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ghn']} | {r['ghn_params'] / 1e6:,.1f}M | {r['ghn_mb']:,.0f} | {r['model']} | "
            f"{r['apply_s'] * 1000:,.0f} ({r['apply_cpu_s'] * 1000:,.0f}) | {r['predict_s'] * 1000:,.0f} | "
            f"{r['apply_mb']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["resnet50", "vit_b_16"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "speed.md")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print where one GHN-3-XL apply's time goes, then stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.profile:
        ghn = build_xl()
        for name in args.models:
            print(profile(ghn, name, args.runs), flush=True)
        return 0

    rows = run("t", "GHN-3-T/m8", build_t, args.models, args.runs)
    rows += run("xl", "GHN-3-XL/m16", build_xl, args.models, args.runs)
    text = "\n".join(
        [
            SECTION,
            "",
            f"Generated by `python benchmarks/ghn3_xl.py` on {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPU cores (shared with other jobs), torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s); median of {args.runs} applies per model. GHN-3-XL/m16: "
            "random weights in the published layout (hid 384, 24 Graphormer layers, 16 heads, max_shape "
            "(384, 384, 16, 16)); GHN-3-T/m8: the reference fixture. GHN memory: RSS taken by building the "
            "GHN; peak extra: rise of peak RSS during one apply.",
            "",
            table(rows),
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(args.out, text, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
