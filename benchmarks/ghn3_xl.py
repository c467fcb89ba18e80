"""What the GHN-3-XL/m16 layout costs on CPU: time and peak memory of ``ghn_init.apply``.

    python benchmarks/ghn3_xl.py                     # resnet50 and vit_b_16, median of 3, 1 thread
    python benchmarks/ghn3_xl.py --models resnet18 --runs 5 --threads 2
    git worktree add /tmp/before <commit>                # then, before vs after in alternating rounds:
    python benchmarks/ghn3_xl.py --compare-with /tmp/before --baseline-label "<commit>" --rounds 3

The real ``ghn3xlm16.pt`` is a 2.5 GB download, so this builds a GHN with the same layout and random
weights (the cost of a forward pass does not depend on the values). The layout follows the published
code: ``GHN3(hid=384, layers=24, heads=16, max_shape=(hid, hid, 16, 16))`` - ``from_pretrained``
gives GHN-3 ``heads = 16 if hid > 64 else 8`` and ``train_ghn_ddp.py`` the ImageNet default
``max_shape = (hid, hid, 16, 16)``; hid 384 and 24 layers are GHN-3-XL's in the GHN-3 paper
(Knyazev et al., ICML 2023, Table 1: 654M parameters), which this layout reproduces. The GHN-3-T/m8
layout (the reference fixture, 6.9M parameters) is measured the same way for comparison.

Memory is the rise of the process's peak RSS (``VmHWM``, reset before each phase): for "GHN" the
building of the GHN, for "apply" the extra memory of one apply on top of the GHN and the model.
Each run also profiles one apply (``--profile-model``, default resnet50): CPU time per phase (graph
transformer, decoders, crop/tile/scale, trace and plan, the rest) and the matmul FLOPs it executes, and
states the floor: those FLOPs at the rate a plain matmul of the decoder's shape reaches in the same run.
Results go to ``docs/speed.md`` (section "GHN-3-XL/m16 on CPU") and stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paths import FIXTURES, REPO  # noqa: E402
from speed import PeakMemory  # noqa: E402 - the sibling benchmark's peak-RSS meter
from vs_published import write_section  # noqa: E402

SECTION = "## GHN-3-XL/m16 on CPU"
REST = "rest (GHN bookkeeping, finiteness checks, post-processing, writing)"
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
    ("shape embeddings", "ghn_init.networks.shape_encoder", "ShapeEncoder.indices"),
    ("graph transformer (Graphormer layers)", "ghn_init.networks.graphormer", "Graphormer.forward"),
    ("decoders (weight decoder, 1-D decoder)", "ghn_init.networks.ghn", "GHN._decode"),
    ("decoders (weight decoder, 1-D decoder)", "ghn_init.networks.decoders", "WeightDecoder.decode_needed"),
    ("crop, tile, scale (fit_to_shape)", "ghn_init.networks.ghn", "fit_to_shape"),
    ("trace and plan", "ghn_init.api", "trace"),
    ("trace and plan", "ghn_init.api", "plan"),
)


@contextlib.contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Wrap the functions of :data:`_PHASES` (where they exist) to add up their CPU time per phase.

    CPU time, not wall time: on a machine shared with other jobs, the time spent waiting for a core is not
    the code's (with one torch thread, CPU time is the work of the one thread that runs apply).
    """
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
            start = time.process_time()
            try:
                return _fn(*args, **kwargs)
            finally:
                totals[_label] = totals.get(_label, 0.0) + time.process_time() - start

        setattr(owner, name, timed)
        undo.append((owner, name, fn))
    try:
        yield totals
    finally:
        for owner, name, fn in reversed(undo):
            setattr(owner, name, fn)


def profile(ghn: torch.nn.Module, model_name: str, runs: int) -> dict:
    """Where one apply's CPU time goes (ms per phase, median over ``runs``) and the matmul GFLOP it executes."""
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    import ghn_init

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name)
    ghn_init.apply(model, ghn)  # warm
    samples = []
    for _ in range(runs):
        with phase_timer() as totals:
            start = time.process_time()
            ghn_init.apply(model, ghn)
            total = time.process_time() - start
        row = dict(totals)
        row[REST] = total - sum(row.values())
        row["total apply"] = total
        samples.append(row)
    with FlopCounterMode(display=False) as flops:
        ghn_init.apply(model, ghn)
    gnn = sum(flops.get_flop_counts().get("GHN.gnn", {}).values())
    total_flops = flops.get_total_flops()
    labels = list(dict.fromkeys(label for label, _, _ in _PHASES)) + [REST, "total apply"]
    return {
        "model": model_name,
        "ms": {label: statistics.median(s.get(label, 0.0) for s in samples) * 1000 for label in labels},
        "gflop": {"all": total_flops / 1e9, "gnn": gnn / 1e9, "decoders": (total_flops - gnn) / 1e9},
    }


def matmul_rates(repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (CPU time) of plain float32 products on this machine's torch threads (best of ``repeats``).

    ``decoder``: the shape of the XL decoder's last layer as :meth:`WeightDecoder.decode_needed` runs it, a
    (128, 128, 3072) block of a wider weight (a strided view) times (3072, 96) node-pixel rows;
    ``decoder_4_rows``: the same block times 4 rows, bound by reading the weight;
    ``square``: 2048 x 2048 x 2048, what the CPU reaches on a large product.
    """

    def rate(fn: Callable[[], Any], flop: float) -> float:
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            fn()
            best = min(best, time.process_time() - start)
        return flop / best / 1e9

    g = torch.Generator().manual_seed(0)
    wide = torch.randn(128, 256, 3072, generator=g)
    block, rows, few = wide[:, :128], torch.randn(3072, 96, generator=g), torch.randn(3072, 4, generator=g)
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    return {
        "decoder": rate(lambda: torch.bmm(block, rows.expand(128, -1, -1)), 2 * 128 * 128 * 3072 * 96),
        "decoder_4_rows": rate(lambda: torch.bmm(block, few.expand(128, -1, -1)), 2 * 128 * 128 * 3072 * 4),
        "square": rate(lambda: a @ b, 2 * 2048**3),
    }


def measure(models: list[str], runs: int, profile_model: str) -> dict:
    """Everything the section reports for the ``ghn_init`` this process imports."""
    import ghn_init

    rows = run("t", "GHN-3-T/m8", build_t, models, runs)
    rows += run("xl", "GHN-3-XL/m16", build_xl, models, runs)
    ghn = build_xl()
    return {
        "ghn_init": str(Path(ghn_init.__file__).parent.parent),
        "rows": rows,
        "profile": profile(ghn, profile_model, runs),
        "rates": matmul_rates(),
        "threads": torch.get_num_threads(),
    }


def measure_in(checkout: Path, args: argparse.Namespace) -> dict:
    """:func:`measure` in a subprocess that imports ``ghn_init`` from ``checkout``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.json"
        cmd = [sys.executable, __file__, "--json", str(out), "--runs", str(args.runs), "--threads", str(args.threads)]
        cmd += ["--profile-model", args.profile_model, "--models", *args.models]
        env = dict(os.environ, PYTHONPATH=str(checkout))
        subprocess.run(cmd, env=env, check=True)
        result = json.loads(out.read_text())
    if Path(result["ghn_init"]).resolve() != checkout.resolve():
        raise SystemExit(f"{checkout} did not provide ghn_init (got {result['ghn_init']})")
    return result


def profile_table(after: list[dict], before: Optional[list[dict]]) -> str:
    """Phases of one apply, median over rounds, after (and before) side by side."""
    model = after[0]["profile"]["model"]
    labels = list(after[0]["profile"]["ms"])
    head = f"| {model} with GHN-3-XL/m16: phase | " + ("before CPU ms | after CPU ms |" if before else "CPU ms |")
    lines = [head, "|---|---|---|" if before else "|---|---|"]

    def ms(results: list[dict], label: str) -> str:
        return f"{statistics.median(r['profile']['ms'][label] for r in results):,.0f}"

    def gflop(results: list[dict]) -> str:
        g = results[-1]["profile"]["gflop"]
        return f"{g['all']:.1f} / {g['gnn']:.1f} / {g['decoders']:.1f}"

    for label in labels:
        lines.append(f"| {label} | " + (f"{ms(before, label)} | " if before else "") + f"{ms(after, label)} |")
    label = "matmul GFLOP executed: all / graph transformer / decoders"
    lines.append(f"| {label} | " + (f"{gflop(before)} | " if before else "") + f"{gflop(after)} |")
    return "\n".join(lines)


def comparison_table(after: list[dict], before: list[dict]) -> str:
    lines = [
        "| GHN-3-XL/m16, model | before: apply ms (CPU ms) per round | after: apply ms (CPU ms) per round "
        "| after / before, wall (median of rounds) | after / before, CPU | peak extra MB: before / after |",
        "|---|---|---|---|---|---|",
    ]

    def pick(results: list[dict], model: str) -> list[dict]:
        return [next(r for r in res["rows"] if r["ghn"] == "GHN-3-XL/m16" and r["model"] == model) for res in results]

    def times(rows: list[dict]) -> str:
        return ", ".join(f"{r['apply_s'] * 1000:,.0f} ({r['apply_cpu_s'] * 1000:,.0f})" for r in rows)

    for model in [r["model"] for r in after[0]["rows"] if r["ghn"] == "GHN-3-XL/m16"]:
        b, a = pick(before, model), pick(after, model)
        wall = statistics.median(x["apply_s"] / y["apply_s"] for x, y in zip(a, b, strict=True))
        cpu = statistics.median(x["apply_cpu_s"] / y["apply_cpu_s"] for x, y in zip(a, b, strict=True))
        lines.append(
            f"| {model} | {times(b)} | {times(a)} | {wall:.2f} | {cpu:.2f} | "
            f"{max(y['apply_mb'] for y in b):,.0f} / {max(x['apply_mb'] for x in a):,.0f} |"
        )
    return "\n".join(lines)


def floor_text(after: list[dict]) -> str:
    """The GHN's own matmul FLOPs at the measured single-thread rate: the time no reorganization removes."""
    last = after[-1]
    g, rates = last["profile"]["gflop"], last["rates"]
    apply_ms = statistics.median(r["profile"]["ms"]["total apply"] for r in after)
    floor_ms = g["all"] / rates["decoder"] * 1000
    peak_ms = g["all"] / rates["square"] * 1000
    return (
        f"**Floor.** One {last['profile']['model']} apply runs {g['all']:.1f} GFLOP of matrix products: "
        f"{g['gnn']:.1f} in the 24 Graphormer layers over the graph's nodes and {g['decoders']:.1f} in the "
        "decoders, mostly the weight decoder's per-pixel MLP, whose last layer maps 3072 features to up to "
        "384 x 384 weights per kernel pixel (computed only at the channels each tensor keeps). These products "
        "are what the published GHN computes for the weights that are written; no reorganization removes them. "
        "A plain float32 product of the decoder's shape "
        f"reaches {rates['decoder']:.0f} GFLOP/s on {last['threads']} thread(s) in the same run "
        f"(a 2048^3 product {rates['square']:.0f} GFLOP/s), so the compute alone takes {floor_ms:,.0f} ms "
        f"({peak_ms:,.0f} ms at the large-product rate): {floor_ms / apply_ms:.0%} of the measured "
        f"{apply_ms:,.0f} CPU ms of one apply. The rest is mostly the decoder's products on few rows at a "
        "time: each block of the last layer's weight (1.8 GB in float32) is read once per apply for all the "
        "tensors that need it, but a block needed only by a handful of 1x1 kernels is bound by that read (the "
        f"same product on 4 rows: {rates['decoder_4_rows']:.0f} GFLOP/s); then tracing, cropping and tiling, "
        "bookkeeping and writing."
    )


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
    ap.add_argument("--profile-model", default="resnet50", help="the model whose apply is profiled")
    ap.add_argument(
        "--compare-with",
        type=Path,
        metavar="CHECKOUT",
        help="another ghn-init checkout (e.g. `git worktree add /tmp/before <commit>`): measure it and this one "
        "in turn, --rounds times each, in subprocesses, and report both",
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline-label", default=None, help="how the section names the --compare-with checkout")
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # measure() into this file (subprocess mode)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.json:
        args.json.write_text(json.dumps(measure(args.models, args.runs, args.profile_model)))
        return 0

    before: Optional[list[dict]] = None
    if args.compare_with:
        before, after = [], []
        for i in range(args.rounds):  # alternate which goes first: the machine's load drifts
            pair = [(before, args.compare_with), (after, REPO)]
            for results, checkout in pair if i % 2 == 0 else pair[::-1]:
                print(f"round {i + 1}: {checkout}", flush=True)
                results.append(measure_in(checkout, args))
    else:
        after = [measure(args.models, args.runs, args.profile_model)]
    command = "python benchmarks/ghn3_xl.py" + (f" --compare-with CHECKOUT --rounds {args.rounds}" if before else "")
    parts = [
        SECTION,
        "",
        f"Generated by `{command}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared with other jobs), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s); median of {args.runs} applies per model. GHN-3-XL/m16: "
        "random weights in the published layout (hid 384, 24 Graphormer layers, 16 heads, max_shape "
        "(384, 384, 16, 16)); GHN-3-T/m8: the reference fixture. GHN memory: RSS taken by building the "
        "GHN; peak extra: rise of peak RSS during one apply."
        + (" The table is the last round of this checkout." if before else ""),
        "",
        table(after[-1]["rows"]),
        "",
    ]
    if before:
        parts += [
            f"Before (CHECKOUT: {args.baseline_label or args.compare_with}) and after (this checkout), measured in "
            f"turn, {args.rounds} rounds each, in one sitting:",
            "",
            comparison_table(after, before),
            "",
        ]
    parts += [
        f"Where one apply's CPU time goes (median of {args.runs} applies"
        + (f" and of the {args.rounds} rounds" if before else "")
        + "; each phase is the inclusive time of the functions that make it, the rest is the remainder):",
        "",
        profile_table(after, before),
        "",
        floor_text(after),
        "",
    ]
    text = "\n".join(parts)
    print(text)
    if not args.no_write:
        write_section(args.out, text, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
