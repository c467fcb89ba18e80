"""``ghn_init.apply`` side by side with the published GHN-3 code, in one process, on the same weights.

    python benchmarks/vs_published.py                          # the nine models, median of 3, 1 thread
    python benchmarks/vs_published.py --models resnet18 --runs 5 --no-write
    python benchmarks/vs_published.py --profile mobilenet_v3_large   # cProfile of our apply, top 30

Both implementations load the same GHN-3-T/m8 layout checkpoint (the reference fixture
``ghn3_t_random.joblib``, keys and shapes of the Hub's ``ghn3tm8.pt``). For each model (torchvision,
default arguments), each run times the whole apply of both, one right after the other and in
alternating order (so a slow moment of a shared machine hits both alike):

- ghn-init: ``ghn_init.apply(model, ghn)`` = trace (meta tensors) + plan + GHN forward/decoding + write;
- published: ``ghn(model)`` of ``ghn3.GHN3`` in eval mode under ``torch.no_grad()`` = graph building
  (``ghn3.Graph``) + GHN forward + tiling/normalizing/writing every tensor (``no_grad`` is the
  published code's fastest setting; without it the published forward also builds an autograd graph).

The ratio is published time / ghn-init time per run; the table gives the median over runs. After the
timed runs, the parameters each implementation wrote into the model are compared (they must agree:
both run the same GHN on the same graph; buffers are not compared, since the published graph building
runs a real forward pass in training mode that updates BatchNorm running statistics). The table goes
to ``docs/speed.md`` (section "vs the published code") and stdout.

The published code is imported only if it is importable; it is never part of ghn-init. To get it:

    # github.com/SamsungSAILMontreal/ghn3 at commit b3289ac and github.com/facebookresearch/ppuda
    # at commit 4673a42 (the commits the reference fixtures were made with)
    git clone https://github.com/SamsungSAILMontreal/ghn3 /tmp/pub/ghn3 && git -C /tmp/pub/ghn3 checkout b3289ac
    git clone https://github.com/facebookresearch/ppuda /tmp/pub/ppuda && git -C /tmp/pub/ppuda checkout 4673a42
    pip install networkx joblib einops                         # its pure-Python dependencies
    PYTHONPATH=/tmp/pub/ghn3:/tmp/pub/ppuda python benchmarks/vs_published.py

(or pass ``--published /tmp/pub/ghn3 /tmp/pub/ppuda``). The published modules also import
``h5py``, ``psutil`` and ``transformers`` at import time, only for dataset loading, memory logging and
one entry of their module table (Hugging Face's ``Conv1D``, used by no torchvision model); where those
are not installed, this script registers empty stand-ins for them before importing, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import importlib
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from paths import FIXTURES, REPO

CHECKPOINT = FIXTURES / "ghn3_t_random.joblib"
MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
    "swin_t",
    "vit_b_16",
    "regnet_y_16gf",
]
HOW_TO_GET = __doc__[__doc__.index("The published code is imported") :]
SECTION = "## vs the published code"


# ---------------------------------------------------------------------------------------- published code


def _stand_in(name: str) -> types.ModuleType:
    """An empty module for an import-time-only dependency of the published code."""
    mod = types.ModuleType(name)
    if name == "psutil":

        class Process:  # the published utils create one at import to log memory
            def __init__(self, *args: Any) -> None:
                pass

            def memory_info(self) -> Any:
                return types.SimpleNamespace(rss=0)

        mod.Process = Process  # type: ignore[attr-defined]
    if name == "transformers":
        utils = types.ModuleType("transformers.pytorch_utils")

        class Conv1D(torch.nn.Module):  # a key of the published module table; no torchvision model has one
            pass

        utils.Conv1D = Conv1D  # type: ignore[attr-defined]
        mod.pytorch_utils = utils  # type: ignore[attr-defined]
        sys.modules["transformers.pytorch_utils"] = utils
    return mod


def import_published(paths: list[str]) -> tuple[Optional[types.ModuleType], list[str]]:
    """The published ``ghn3`` package, or None; and the stand-ins registered for missing dependencies."""
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    stood_in = []
    for dep in ("h5py", "psutil", "transformers"):
        try:
            importlib.import_module(dep)
        except ImportError:
            sys.modules[dep] = _stand_in(dep)
            stood_in.append(dep)
    try:
        import ghn3  # noqa: F401
        import ghn3.nn
    except ImportError as e:
        print(f"published code not importable ({type(e).__name__}: {e})", file=sys.stderr)
        for dep in stood_in:
            sys.modules.pop(dep, None)
        return None, []
    return ghn3, stood_in


def load_published(ghn3: types.ModuleType, checkpoint: Path) -> torch.nn.Module:
    """``ghn3.from_pretrained`` on a local joblib file (its Hub download is pointed at the file)."""
    nn_mod = sys.modules["ghn3.nn"]
    original = nn_mod.hf_hub_download
    nn_mod.hf_hub_download = lambda repo_id, filename, **kw: str(checkpoint)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ghn = nn_mod.from_pretrained(str(checkpoint))
    finally:
        nn_mod.hf_hub_download = original
    return ghn.eval()


# ---------------------------------------------------------------------------------------- measuring


def build(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(name)


def _seconds(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of ``fn()``; CPU time of this process is what other jobs on a shared
    machine disturb least (with one torch thread the two are equal on an idle machine).

    The garbage collector runs first, untimed, so each call starts from a collected heap and pays for the
    collections its own allocations start, not for ones the other implementation's garbage set up. A full
    collection walks every Python object of the process (65-90 ms here, with torch and torchvision loaded)
    and starts once enough objects were allocated since the last one; without this it fell into whichever
    call crossed that line (the published vit_b_16 took 1,275-1,353 ms in some runs, 662-756 ms in others).
    Turning the collector off instead, as ``timeit`` does, made the published code slower still (its vit_b_16
    2,453 ms: garbage it leaves in reference cycles, large tensors among it, was then never freed).
    """
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _timed_runs(
    runs: int,
    ours: Callable[[], Any],
    published: Optional[Callable[[], Any]],
    ours_s: list[tuple[float, float]],
    pub_s: list[tuple[float, float]],
) -> None:
    """``runs`` timed calls of each, one right after the other, in alternating order."""
    for r in range(runs):
        if published is None:
            ours_s.append(_seconds(ours))
        elif r % 2 == 0:
            ours_s.append(_seconds(ours))
            pub_s.append(_seconds(published))
        else:
            pub_s.append(_seconds(published))
            ours_s.append(_seconds(ours))


def compare_params(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest difference between two sets of parameters, relative to each tensor's largest value."""
    worst = 0.0
    for k, x in a.items():
        y = b[k]
        worst = max(worst, float((x - y).abs().max() / x.abs().max().clamp_min(1e-12)))
    return worst


def measure(name: str, ours: torch.nn.Module, published: Optional[torch.nn.Module], runs: int) -> dict[str, Any]:
    import ghn_init

    model = build(name)
    ours_s: list[tuple[float, float]] = []
    pub_s: list[tuple[float, float]] = []

    def run_ours() -> None:
        ghn_init.apply(model, ours)

    def run_published() -> None:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            published(model)  # type: ignore[misc]

    run_ours()  # warm-up: first-call allocations and caches are no part of either steady state
    if published is not None:
        run_published()
    _timed_runs(runs, run_ours, run_published if published is not None else None, ours_s, pub_s)
    row: dict[str, Any] = {"model": name, "ours": statistics.median(o[0] for o in ours_s)}

    row["ours_cpu"] = statistics.median(o[1] for o in ours_s)
    if published is not None:
        row["published"] = statistics.median(p[0] for p in pub_s)
        row["published_cpu"] = statistics.median(p[1] for p in pub_s)
        row["ratio"] = statistics.median(p[0] / o[0] for p, o in zip(pub_s, ours_s, strict=True))
        row["ratio_cpu"] = statistics.median(p[1] / o[1] for p, o in zip(pub_s, ours_s, strict=True))
        torch.manual_seed(0)  # the ViT class token is drawn at random by both
        run_ours()
        mine = {k: v.detach().clone() for k, v in model.named_parameters()}
        torch.manual_seed(0)
        run_published()  # also updates BatchNorm running statistics (its graph is read off a real forward)
        row["max_rel_diff"] = compare_params(mine, dict(model.named_parameters()))
    return row


def profile(name: str, ours: torch.nn.Module, top: int) -> None:
    import ghn_init

    model = build(name)
    ghn_init.apply(model, ours)  # warm-up
    prof = cProfile.Profile(time.process_time)  # CPU time: steadier on a shared machine
    prof.enable()
    for _ in range(3):
        ghn_init.apply(model, ours)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


# ---------------------------------------------------------------------------------------- output


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | ghn-init apply ms (CPU ms) | published apply ms (CPU ms) | **published / ghn-init** "
        "| same, by CPU time | max rel. diff of written params |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        pub = r.get("published")
        ours = f"{1000 * r['ours']:,.1f} ({1000 * r['ours_cpu']:,.1f})"
        if pub is None:
            lines.append(f"| {r['model']} | {ours} | - | - | - | - |")
            continue
        lines.append(
            f"| {r['model']} | {ours} | {1000 * pub:,.1f} ({1000 * r['published_cpu']:,.1f}) | "
            f"**{r['ratio']:.2f}x** | {r['ratio_cpu']:.2f}x | {r['max_rel_diff']:.1e} |"
        )
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    if ratios:
        cpu = [r["ratio_cpu"] for r in rows if "ratio" in r]
        lines.append(
            f"| **median over models** | | | **{statistics.median(ratios):.2f}x** (min {min(ratios):.2f}x) "
            f"| {statistics.median(cpu):.2f}x (min {min(cpu):.2f}x) | |"
        )
    return "\n".join(lines)


def write_section(out: Path, text: str, section: str = SECTION) -> None:
    """Replace (or append) the section of ``out`` whose heading is ``section`` (``text`` starts with it)."""
    old = out.read_text() if out.exists() else ""
    if section in old:
        head, rest = old.split(section, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    out.write_text(new.rstrip("\n") + "\n")


def _measure_in_child(name: str, argv: list[str]) -> dict[str, Any]:
    """:func:`measure` for one model in a fresh Python process with the same arguments.

    In one long process the published code slowed down as it worked through the models (densenet121: 1,149-1,200 ms
    after seven other models, 508 ms alone), which flattered the ratios; a process per model keeps each model's
    measurement independent of the ones before it.
    """
    import subprocess

    rest, skip = [], False
    for a in argv:  # drop --models and its values: the child gets one model
        if a == "--models":
            skip = True
            continue
        if skip and not a.startswith("--"):
            continue
        skip = False
        rest.append(a)
    cmd = [sys.executable, str(Path(__file__).resolve()), *rest, "--models", name, "--row-json", "--no-write"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    rows = [line[4:] for line in out.stdout.splitlines() if line.startswith("ROW ")]
    if out.returncode != 0 or not rows:
        raise SystemExit(f"measuring {name} in a child process failed:\n{out.stderr[-2000:]}")
    return json.loads(rows[-1])


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    ap.add_argument("--published", nargs="*", default=[], help="paths to put on sys.path for ghn3 and ppuda")
    ap.add_argument("--profile", metavar="MODEL", help="cProfile ghn-init's apply on MODEL and exit")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "speed.md")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--in-process", action="store_true",
                    help="measure every model in this process (default: a fresh process per model)")  # fmt: skip
    ap.add_argument("--row-json", action="store_true", help=argparse.SUPPRESS)  # a child's output: one JSON row
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if not args.checkpoint.exists():
        print(f"checkpoint {args.checkpoint} not found (set GHN_INIT_FIXTURES or pass --checkpoint)", file=sys.stderr)
        return 2
    from ghn_init.hub.checkpoints import load_file

    ours = load_file(args.checkpoint).eval()
    if args.profile:
        profile(args.profile, ours, args.top)
        return 0
    ghn3, stood_in = import_published(args.published)
    published = None
    if ghn3 is None:
        print("Timing ghn-init alone. " + HOW_TO_GET, file=sys.stderr)
    else:
        published = load_published(ghn3, args.checkpoint)
        if stood_in:
            print(f"(empty stand-ins registered for the published code's import-time deps: {', '.join(stood_in)})")

    rows = []
    for name in args.models:
        if args.in_process or args.row_json:
            rows.append(measure(name, ours, published, args.runs))
        else:
            rows.append(_measure_in_child(name, argv if argv is not None else sys.argv[1:]))
        if args.row_json:
            print("ROW " + json.dumps(rows[-1]), flush=True)
            return 0
        print(table(rows[-1:]).splitlines()[2], flush=True)
    text = "\n".join(
        [
            SECTION,
            "",
            f"Generated by `python benchmarks/vs_published.py` on {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s). "
            f"Both implementations in one process on the same GHN-3-T/m8 layout weights; whole apply (graph + "
            f"GHN forward + writing every tensor) of a torchvision model with default arguments; "
            f"{'all models in one process' if args.in_process else 'a fresh process per model'}, one warm-up "
            f"apply of each, then {args.runs} "
            "runs per model, the two implementations interleaved in alternating order, the garbage collector run "
            "(untimed) before each timed call; the ratio is the median "
            "over runs of published time / ghn-init time. Published: `ghn3` at b3289ac with `ppuda` at 4673a42, "
            "GHN in eval mode under `torch.no_grad()`. Last column: largest difference between the parameters "
            "the two wrote, relative to the tensor's largest value.",
            "",
            table(rows),
            "",
            "vit_b_16's difference is its class token, which both draw at random (ghn-init from the caller's "
            "generator, the published code after its own graph-building forward pass has used it); every "
            "other predicted value agrees to float rounding.",
            "",
            "Where the difference comes from: the published code builds the graph with a real forward pass "
            "(in training mode) and networkx, tiles every tensor with two `repeat`s and copies it again when "
            "writing, and decodes every output channel of its largest shape before cropping. ghn-init records "
            "the graph on meta tensors, with shape-only stand-ins for the operations that PyTorch runs as "
            "Python decompositions on meta tensors (activations including SiLU, sigmoid and tanh, `add`/`mul` "
            "also of permuted operands, whose output strides it works out as PyTorch does, `cat`, `linear`'s "
            "`addmm`, `roll`, `conv2d`, adaptive pooling, and the output allocation of "
            "norms and activations, whose `empty_like` is itself a Python reference on meta; "
            "`ghn_init/graph/meta_ops.py`, `ghn_init/graph/elementwise_layout.py`), notes which modules ran "
            "with a `forward` wrapper instead of hooks, walks the model's modules once per prediction, finds "
            "shortest paths with NumPy steps "
            "instead of networkx, gathers the attention's edge bias once for all layers, decodes each group "
            "of tensors only at the channels its tensors read (densenet121's 32-channel 3x3 convolutions, "
            "grouped at 64 as published, compute 32; a depthwise kernel needs 1/64 of its block), runs the "
            "decoder's last layer once for all groups that keep the same channels and scales each group with "
            "one multiply, and tiles "
            "each large tensor straight into the model's own tensor (`ghn_init/tiling.py`, "
            "`ghn_init/writing.py`): no model-sized temporary. The GHN's own matrix products and writing the "
            "model's memory are now most of ghn-init's time on CNNs.",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
