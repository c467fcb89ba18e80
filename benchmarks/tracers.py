"""Time the two graph tracers per model and record which models each one handles.

    python benchmarks/tracers.py                              # fixture models + torchvision classifiers
    python benchmarks/tracers.py --models resnet18 timm/dla34 --repeats 3 --out docs/tracers.md

For every model: the median over ``--repeats`` runs (after one warm-up run) of ``ghn_init.trace``
with ``tracer="autograd"`` and with ``tracer="fx"`` (1 thread), whether each path worked, which
recorder it ended with (``autograd-meta`` or ``autograd-forward``), and whether the two GHN graphs are
identical (nodes, types, shapes, modules, edges, virtual edges). Models are built on the meta device
(no weights are allocated or initialized; both tracers only read shapes), except with ``--cpu`` or when
a constructor computes with tensors (torchvision's RegNets: built on CPU). With ``--export NAMES``,
those models are also built on CPU, exported with ``torch.export.export`` and traced as programs.
The table is written as Markdown to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torchvision
from paths import FIXTURES, REPO

sys.path.insert(0, str(REPO))
import ghn_init  # noqa: E402 - the checkout's package, after the path is set
from ghn_init.graph import default_input_size  # noqa: E402
from ghn_init.models import create_model  # noqa: E402


def default_models() -> list[str]:
    fixture = sorted(p.stem.replace("__", "/") for p in (FIXTURES / "graphs").glob("*.json"))
    classifiers = sorted(torchvision.models.list_models(module=torchvision.models))
    return fixture + [m for m in classifiers if m not in fixture]


def build(name: str, cpu: bool) -> torch.nn.Module:
    """The model on the meta device (or on CPU if asked, or if its constructor computes with tensors)."""
    for device in ("cpu",) if cpu else ("meta", "cpu"):
        try:
            with torch.device(device):
                return create_model(name).eval()
        except NotImplementedError:  # "Cannot copy out of meta tensor" in a constructor
            continue
    raise RuntimeError(f"cannot build {name}")


def timed(model: Any, size: tuple[int, ...] | None, tracer: str, repeats: int) -> tuple[float | None, Any, str]:
    try:
        graph = ghn_init.trace(model, size, tracer=tracer)  # warm-up (imports, op caches)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ghn_init.trace(model, size, tracer=tracer)
            times.append(time.perf_counter() - start)
        return statistics.median(times), graph, ""
    except Exception as e:  # noqa: BLE001 - a failing model is a result
        return None, None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: fixture models + torchvision classifiers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="build models on CPU instead of the meta device")
    parser.add_argument(
        "--export", nargs="*", default=None, help="also trace torch.export.export(model) for these models (all if none)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "tracers.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.models or default_models()
    rows = []
    for name in names:
        model = build(name, args.cpu)
        size = default_input_size(model)  # as apply reads it (Inception 299, a timm model's pretrained config, ...)
        t_a, g_a, e_a = timed(model, size, "autograd", args.repeats)
        t_f, g_f, e_f = timed(model, size, "fx", args.repeats)
        same = g_a is not None and g_f is not None and g_a.to_dict() == g_f.to_dict()
        t_e, same_e, e_e = None, "-", ""
        if args.export is not None and (not args.export or name in args.export):
            try:
                program = torch.export.export(build(name, cpu=True), (torch.zeros(2, *size),))
                t_e, g_e, e_e = timed(program, None, "fx", args.repeats)
                same_e = "yes" if g_e is not None and g_a is not None and g_e.to_dict() == g_a.to_dict() else "no"
            except Exception as e:  # noqa: BLE001 - a model that cannot be exported is a result
                e_e = f"export: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
        row = {
            "model": name,
            "nodes": len(g_a) if g_a is not None else (len(g_f) if g_f is not None else 0),
            "autograd": f"{t_a:.3f}" if t_a is not None else "fails",
            "recorder": g_a.tracer if g_a is not None else e_a,
            "fx": f"{t_f:.3f}" if t_f is not None else "fails",
            "fx_error": e_f,
            "ratio": f"{t_f / t_a:.1f}" if t_a and t_f else "",
            "same": "yes" if same else ("no" if g_a is not None and g_f is not None else "-"),
            "program": "-" if same_e == "-" and not e_e else (f"{t_e:.3f}" if t_e is not None else "fails"),
            "program_same": same_e,
            "program_error": e_e,
        }
        rows.append(row)
        print(" | ".join(str(v) for v in row.values()), flush=True)
        write(rows, args, done=len(rows) == len(names))


def write(rows: list[dict], args: argparse.Namespace, done: bool = True) -> None:
    ok_a = [r for r in rows if r["autograd"] != "fails"]
    ok_f = [r for r in rows if r["fx"] != "fails"]
    ratios = [float(r["ratio"]) for r in rows if r["ratio"]]
    exported = [r for r in rows if r["program"] != "-"]
    where = "CPU" if args.cpu else "meta device where the constructor allows it, else the CPU"
    n_exported = sum(not r["program_error"].startswith("export") for r in exported)
    lines = [
        "# Graph tracers: autograd vs torch.fx",
        "",
        (
            f"Generated by `{' '.join(['python', 'benchmarks/tracers.py', *sys.argv[1:]])}`"
            + f" (torch {torch.__version__}, 1 thread, median of {args.repeats} runs "
            f"after a warm-up; models built on the {where}). Time is `ghn_init.trace(model, tracer=...)`: "
            "recording plus the published reduction rules (the rules take the same time on both paths)."
        ),
        "",
        (
            f"- autograd path handles {len(ok_a)}/{len(rows)} models, fx path {len(ok_f)}/{len(rows)}; "
            f"identical GHN graphs on {sum(r['same'] == 'yes' for r in rows)}/{len(rows)}."
        ),
        (
            f"- fx / autograd time: median {statistics.median(ratios):.1f}x, "
            f"min {min(ratios):.1f}x, max {max(ratios):.1f}x."
        )
        if ratios
        else "",
        (
            '- Hence `tracer="auto"` (the default) tries autograd on meta tensors first, then fx (which also '
            "captures models that mix CPU tensors into their forward), then a real forward pass."
        ),
        (
            "- ExportedProgram (`torch.export.export(model)` of the model built on CPU, traced with fx; export time "
            f"not included): {len(exported)} models, exported {n_exported}, "
            f"traced {sum(r['program'] not in ('-', 'fails') for r in exported)}, same graph as the module "
            f"{sum(r['program_same'] == 'yes' for r in exported)}."
        )
        if exported
        else "- ExportedProgram inputs not measured in this run (`--export`).",
        "",
        "| model | nodes | autograd (s) | autograd recorder | fx (s) | fx / autograd | same graph | fx error |"
        + (" program (s) | program same | program error |" if exported else ""),
        "|---|---:|---:|---|---:|---:|---|---|" + ("---:|---|---|" if exported else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['nodes']} | {r['autograd']} | {r['recorder']} | {r['fx']} | {r['ratio']} | "
            f"{r['same']} | {r['fx_error']} |"
            + (f" {r['program']} | {r['program_same']} | {r['program_error']} |" if exported else "")
        )
    lines += [
        "",
        "## Notes",
        "",
        "- Both paths end in the same reduction rules (`ghn_init/graph/builder.py`); the fx path reads each ATen call "
        "as the autograd node it creates (name, inputs in autograd's order, `CopySlices` for in-place calls on views, "
        "nothing under `torch.no_grad()`), so the graphs agree node for node and edge for edge "
        "(`tests/test_fx_trace.py`: all 40 fixture models with `-m slow`, 10 of them by default, and tiny models).",
        "- The fx path fails where fake tensors cannot go: data-dependent control flow, `.item()`, `nonzero` "
        "(detection models); the autograd recorder then runs one real forward pass. It works where the meta-tensor "
        "recorder does not because a CPU tensor is made inside `forward` (fake tensors keep the device).",
        "- An `ExportedProgram` is read by re-tracing `program.module()` with fx; its parameter nodes refer to "
        "`ghn_init.graph.program.program_module(program)`, a module tree of the original layer classes (from the "
        "exporter's `nn_module_stack`, or from the ATen call that uses a weight) holding the program's own "
        "`state_dict` tensors, so `apply(program)` writes into the program.",
    ]
    if not done:
        lines.insert(2, "(partial: the run is still going)")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
