"""Coverage sweep: apply a GHN to every torchvision model (every family) and every timm model.

    python benchmarks/coverage.py                       # torchvision + timm, GHN-3-T fixture layout
    python benchmarks/coverage.py --source torchvision --ghn ghn2
    python benchmarks/coverage.py --source families     # detection, segmentation, video, optical flow, quantization
    python benchmarks/coverage.py --models resnet18 timm/resnet10t --out-dir /tmp/cov

Each model runs in a fresh process forked from a parent that imported torch, torchvision, timm and
ghn_init and loaded the GHN once, so a child costs milliseconds to start, a crash or a leak stays
in the child, and a time limit can be enforced (the child is killed). Results are appended to
``<out-dir>/coverage_<ghn>.csv`` as they come in; a rerun skips the models already in the CSV
(``--retry`` redoes the ones that did not end ``ok``). ``<out-dir>/coverage.md`` is regenerated from
the CSVs at the end (or alone with ``--report-only``).

torchvision families other than classification are listed with ``torchvision.models.list_models(module=...)``
and built with :func:`ghn_init.models.create_model` (no weights, no backbone weights); their ``source`` is
``torchvision.<family>``. After a write, the model is run once more on the recorded input (CSV column
``runs_after``: ``ok`` when every output tensor is finite).

Models with more than ``--meta-above`` parameters (counted by building the model on the meta
device) are built on the meta device and go through trace + plan + GHN decoding on CPU, with the
shape/finiteness checks of a write but without writing (CSV column ``mode`` = ``meta``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from paths import FIXTURES, REPO

GHN_FILES = {"ghn3_t": "ghn3_t_random.joblib", "ghn2": "ghn2_random.pt"}
GHN_LABELS = {"ghn3_t": "GHN-3-T/m8 layout (random fixture weights)", "ghn2": "GHN-2 layout (random fixture weights)"}

COLUMNS = [
    "source",
    "model",
    "status",
    "error",
    "mode",
    "tracer",
    "params",
    "params_predicted",
    "share_predicted",
    "tensors",
    "tensors_predicted",
    "left_alone",
    "nodes",
    "input_size",
    "seconds_build",
    "seconds_trace",
    "seconds_predict",
    "seconds_write",
    "seconds_total",
    "peak_rss_mb",
    "runs_after",
    "notes",
]

# torchvision.models sub-packages, each a family of list_models(module=...) besides classification
FAMILIES = ("detection", "segmentation", "video", "optical_flow", "quantization")
SOURCES = ("torchvision", *(f"torchvision.{f}" for f in FAMILIES), "timm")


# ----------------------------------------------------------------------------------------------
# the work done in a child
# ----------------------------------------------------------------------------------------------


def list_models(source: str) -> list[str]:
    if source == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models(module=torchvision.models))
    if source.startswith("torchvision."):
        import importlib

        import torchvision

        family = importlib.import_module(f"torchvision.models.{source.split('.', 1)[1]}")
        return sorted(torchvision.models.list_models(module=family))
    if source == "timm":
        import timm

        return ["timm/" + m for m in sorted(timm.list_models())]
    raise ValueError(source)


_FAMILY_OF: dict[str, str] = {}


def source_of(name: str) -> str:
    if name.startswith("timm/"):
        return "timm"
    if not _FAMILY_OF:
        for source in SOURCES[1:-1]:
            _FAMILY_OF.update(dict.fromkeys(list_models(source), source))
    return _FAMILY_OF.get(name, "torchvision")


def build(name: str, meta: bool = False):
    import torch

    ctx = torch.device("meta") if meta else torch.device("cpu")
    with ctx:
        if name.startswith("timm/"):
            import timm

            return timm.create_model(name[len("timm/") :], pretrained=False)
        from ghn_init.models import create_model

        return create_model(name)  # no weights, no backbone weights (detection/segmentation)


def _group_left_alone(left_alone: dict[str, str]) -> str:
    grouped: dict[str, list[str]] = {}
    for tensor, reason in left_alone.items():
        grouped.setdefault(reason, []).append(tensor)
    parts = []
    for reason, names in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"{reason} [{len(names)}]: {shown}")
    return " | ".join(parts)


def run_one(name: str, ghn, meta_above: Optional[int]) -> dict[str, Any]:
    """Build ``name``, apply the GHN (or decode without writing for huge models), describe what happened."""
    import ghn_init
    from ghn_init.graph import default_input_size

    row: dict[str, Any] = {"source": source_of(name), "model": name, "mode": "write"}
    t0 = time.perf_counter()
    model = None
    if meta_above is not None:
        try:
            meta_model = build(name, meta=True)
            n = sum(p.numel() for p in meta_model.parameters())
            if n > meta_above:
                model, row["mode"] = meta_model, "meta"
            else:
                del meta_model
        except Exception:  # noqa: BLE001 - a model that cannot be built on meta is built for real
            pass
    if model is None:
        model = build(name)
    t1 = time.perf_counter()
    row["seconds_build"] = t1 - t0
    row["input_size"] = "x".join(map(str, default_input_size(model)))
    if row["mode"] == "meta":  # a dry run: every tensor predicted and checked, one at a time, none written
        report = ghn_init.predict(model, ghn, dry_run=True).report
    else:
        report = ghn_init.apply(model, ghn)
        row["runs_after"] = runs_after(model)
    row.update(
        status="ok",
        error="",
        tracer=report.tracer,
        params=report.numel_total,
        params_predicted=report.numel_predicted,
        share_predicted=round(report.fraction_predicted, 6),
        tensors=len(report.predicted) + len(report.left_alone),
        tensors_predicted=len(report.predicted),
        left_alone=_group_left_alone(report.left_alone),
        nodes=report.nodes,
        seconds_trace=report.seconds.get("trace", 0.0),
        seconds_predict=report.seconds.get("predict", 0.0),
        seconds_write=report.seconds.get("write", 0.0),
        notes=" | ".join(report.notes),
    )
    row["seconds_total"] = time.perf_counter() - t0
    return row


def runs_after(model) -> str:
    """Run the (written) model once in eval mode on its recording input: "ok" if every output is finite."""
    import torch

    from ghn_init.graph import default_input_size
    from ghn_init.graph.autograd_trace import output_tensors
    from ghn_init.graph.inputs import default_inputs

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*default_inputs(model, default_input_size(model), batch=1))
        tensors = [t for t in output_tensors(out) if t.is_floating_point()]
        if not tensors:
            return "no tensor output"
        return "ok" if all(bool(torch.isfinite(t).all()) for t in tensors) else "non-finite output"
    except Exception as e:  # noqa: BLE001 - a model that no longer runs is a result
        return _one_line(f"{type(e).__name__}: {e}", 120)
    finally:
        model.train(training)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def child_main(name: str, ghn, meta_above: Optional[int], fd: int) -> None:
    """Runs in the forked child: one model, one JSON line to the pipe, then _exit."""
    code = 0
    try:
        try:
            row = run_one(name, ghn, meta_above)
        except BaseException as e:  # noqa: BLE001 - every failure is a result of the sweep
            tb = traceback.extract_tb(e.__traceback__)
            where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
            row = {
                "source": source_of(name),
                "model": name,
                "status": type(e).__name__,
                "error": _one_line(f"{e}{where}"),
            }
        row["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        data = (json.dumps(row, default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


# ----------------------------------------------------------------------------------------------
# the parent: scheduling, time limits, the CSV
# ----------------------------------------------------------------------------------------------


class Running:
    def __init__(self, name: str, pid: int, fd: int):
        self.name, self.pid, self.fd = name, pid, fd
        self.start = time.monotonic()
        self.buffer = b""


def _fmt(v: Any) -> Any:
    return f"{v:.3f}" if isinstance(v, float) else v


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def latest_rows(path: Path) -> dict[str, dict[str, str]]:
    """The last row per model (a retried model appears more than once)."""
    return {r["model"]: r for r in read_rows(path)}


def append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    if not new:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if header != COLUMNS:  # a CSV from an older sweep: rewrite it with the current columns
            old = read_rows(path)
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
                w.writeheader()
                w.writerows(old)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: _fmt(row.get(k, "")) for k in COLUMNS})
        f.flush()


def sweep(
    names: list[str],
    ghn,
    csv_path: Path,
    *,
    timeout: float,
    workers: int,
    meta_above: Optional[int],
    verbose: bool = True,
) -> None:
    queue = list(names)
    running: dict[int, Running] = {}
    done = 0

    def finish(r: Running, row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        row.setdefault("source", source_of(r.name))
        row.setdefault("model", r.name)
        row.setdefault("seconds_total", time.monotonic() - r.start)
        append_row(csv_path, row)
        if verbose:
            share = row.get("share_predicted")
            share = f"{100 * float(share):.1f}%" if share not in (None, "") else ""
            print(
                f"[{done}/{len(names)}] {r.name}: {row['status']} {row.get('mode', '')} {share} "
                f"{float(row['seconds_total']):.1f}s {row.get('error', '')[:160]}",
                flush=True,
            )

    while queue or running:
        while queue and len(running) < workers:
            name = queue.pop(0)
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child
                os.close(rfd)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                child_main(name, ghn, meta_above, wfd)
            os.close(wfd)
            running[pid] = Running(name, pid, rfd)
        ready, _, _ = select.select([r.fd for r in running.values()], [], [], 0.2)
        for r in list(running.values()):
            if r.fd in ready:
                chunk = os.read(r.fd, 1 << 16)
                r.buffer += chunk
                if chunk:
                    continue
            # EOF or not ready: is it finished, or over time?
            pid, status = os.waitpid(r.pid, os.WNOHANG)
            if pid == 0:
                if time.monotonic() - r.start > timeout:
                    os.kill(r.pid, signal.SIGKILL)
                    os.waitpid(r.pid, 0)
                    os.close(r.fd)
                    del running[r.pid]
                    finish(r, {"status": "timeout", "error": f"killed after {timeout:.0f} s", "seconds_total": timeout})
                continue
            # the child exited: drain the pipe
            while True:
                chunk = os.read(r.fd, 1 << 16)
                if not chunk:
                    break
                r.buffer += chunk
            os.close(r.fd)
            del running[r.pid]
            line = r.buffer.decode(errors="replace").strip()
            if line:
                row = json.loads(line)
            elif os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                why = "killed (out of memory?)" if sig == signal.SIGKILL else f"signal {signal.Signals(sig).name}"
                row = {"status": "crash", "error": why}
            else:
                row = {"status": "crash", "error": f"exited with code {os.WEXITSTATUS(status)} without a result"}
            finish(r, row)


# ----------------------------------------------------------------------------------------------
# docs/coverage.md
# ----------------------------------------------------------------------------------------------

SEMANTICS = """\
## What is predicted, and what stays at default initialization

A GHN writes a tensor only where the graph has a node of the DeepNets-1M vocabulary for it
(conv, linear = 1x1 conv, batch/layer norm weight + bias, attention in-projection, position encoding)
and the published GHN decodes a tensor for that node. Everything else keeps the model's own
initialization and is listed in `Report.left_alone` with the reason:

| reason in the report | what it covers | why it is not predicted |
|---|---|---|
| `parameter held directly by X (token, position embedding, scale...): no GHN node type for it` | class/distillation/register tokens, timm position embeddings (`pos_embed`), layer-scale gammas (`gamma`, `ls1.gamma`), relative-position bias tables, learned temperatures/logit scales, `alpha`/`beta` of norm-free nets | these are tensors used by elementwise ops (`add`, `mul`) rather than by a layer of the GHN vocabulary. GHN-2/GHN-3 were trained on DeepNets-1M and on the PyTorch/timm models of their papers with exactly these left at their default init (the published code predicts only parameters of layer nodes; torchvision's ViT `pos_embedding` is the one published exception, kept for compatibility). Their defaults (zeros, truncated normal 0.02, layer-scale 1e-5 .. 1) are the identity-preserving values the architectures were designed around, and the GHN has never seen them, so predicting them would be guesswork. |
| `X is outside the GHN vocabulary (register_module can map it)` | parameters of layers outside the vocabulary: `GroupNorm`/`LocalResponseNorm`-style norms not built on BatchNorm/LayerNorm, `Conv1d`/`Conv3d`, `PReLU`, RNN cells, custom timm layers that are not subclasses of `nn.Conv2d`/`nn.Linear`/`nn.BatchNorm2d`/`nn.LayerNorm` | the GHN has no node type for them; mapping them to a near type would give a tensor of the wrong distribution. Use `ghn_init.register_module(Type, "conv" / "bn" / "ln")` to opt in for a custom layer that behaves like one. |
| `in the graph, but the published GHN writes no tensor for it` | parameters whose node exists but that the published layout cannot decode (e.g. 5-D weights) | the decoders only produce 1-D..4-D tensors. |
| `norm bias of a weight the GHN does not predict` | the bias of a norm layer whose weight is left alone | norm weight and bias are decoded together, from the weight's node. |
| `not used by the forward pass in eval mode (e.g. an auxiliary head): no graph node` | parameters the recorded forward pass never touched (GoogLeNet/Inception-v3 auxiliary heads, unused branches) | there is no graph node to predict them from. |
| `its layer ran, but no gradient path leads from it to the outputs in eval mode (detached or discrete: ...)` | detection models' region-proposal heads (their proposals are detached before the box heads), argmax/top-k branches | the graph is read off autograd from the outputs, so a layer reached only through `detach()` or a discrete op has no node. |
| `in the graph as 'stem.weight': the published builder cuts names at 'stem'/'pos_enc' ...` | timm's `conv_stem.weight` (EfficientNet, MobileNet-V3, ...) | the published builder renames parameters to their DeepNets-1M suffix and finds no tensor under the new name; kept for fidelity to the published GHNs. |
| `'X' of Layer: the GHN predicts only a layer's weight and bias` | extra parameters of a layer in the vocabulary (a gain on a conv subclass) | the GHN decodes one weight (and bias) per node. |
| `parametrized tensor (...)` / `weight_g of a weight computed by a hook (...)` | `weight_norm` / `spectral_norm` parts (`original0`, `weight_g`, `weight_v`, `weight_orig`) | the GHN predicts a layer's weight, not the parts it is computed from. |
| `classifier kept at its default init (predict_classifier=False)` | the last layer, on request | — |

Parameters that do have a node keep the published behaviour exactly (verified node-for-node and
value-for-value on 40 reference models by `tests/test_fixtures.py`); tied weights are written once
(one tensor, one node — the last owner's name in the graph).
"""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _median(values: list[float]) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def _status_cell(r: dict[str, str]) -> str:
    if r["status"] == "ok":
        return "ok"
    err = r.get("error", "").replace("|", "\\|")
    return f"**{r['status']}**: {err[:200]}"


def write_markdown(out_dir: Path, ghns: list[str], expected: dict[str, int]) -> Path:
    lines = ["# Coverage: ghn-init on every torchvision model (every family) and every timm model", ""]
    lines.append(
        "Generated by `python benchmarks/coverage.py` (each model in a fresh forked process with a time limit; "
        "GHN fixtures with random weights in the official layouts, so this measures coverage and cost, not "
        "accuracy). Models are built with default arguments (torchvision: no weights, no backbone weights) and "
        "recorded with the input read off the model (`ghn_init.graph.inputs.infer_input_size`: 224 for most, 299 for "
        "Inception-v3, (3, 16, 224, 224) clips for video models, two images for optical flow). `runs after` = the "
        "written model ran once more with finite outputs. Per-model rows: `coverage_<ghn>.csv` "
        "(`mode` = `write`: built on CPU and written; `meta`: built on the meta device because it has more "
        "parameters than `--meta-above`, traced, planned and decoded on CPU with the write checks, not written)."
    )
    lines.append("")
    sections = []
    for g in ghns:
        rows = latest_rows(out_dir / f"coverage_{g}.csv")
        if not rows:
            continue
        lines.append(f"## Totals — {GHN_LABELS.get(g, g)}")
        lines.append("")
        lines.append(
            "| | ok | swept | of | >= 99% params predicted (of ok) | median params predicted | median time (ok) "
            "| median trace | median predict |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for src in SOURCES:
            rs = [r for r in rows.values() if r["source"] == src]
            if not rs:
                continue
            ok = [r for r in rs if r["status"] == "ok"]
            hi = [r for r in ok if float(r["share_predicted"]) >= 0.99]
            med = lambda k: _median([float(r[k]) for r in ok if r.get(k)])  # noqa: E731, B023 - used right away
            lines.append(
                f"| {src} | **{len(ok)}/{len(rs)}** | {len(rs)} | {expected.get(src, '?')} | "
                f"{len(hi)}/{len(ok)} ({_pct(len(hi) / len(ok)) if ok else '-'}) | "
                f"{_pct(med('share_predicted')) if ok else '-'} | {med('seconds_total'):.2f} s | "
                f"{med('seconds_trace'):.3f} s | {med('seconds_predict'):.3f} s |"
            )
        meta = [r for r in rows.values() if r.get("mode") == "meta"]
        if meta:
            lines.append("")
            lines.append(f"{len(meta)} models ran in `meta` mode (decoded, not written).")
        fails = [r for r in rows.values() if r["status"] != "ok"]
        if fails:
            kinds: dict[str, int] = {}
            for r in fails:
                kinds[r["status"]] = kinds.get(r["status"], 0) + 1
            lines.append("")
            lines.append("Not ok: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
        reasons: dict[str, int] = {}
        for r in rows.values():
            for part in filter(None, r.get("left_alone", "").split(" | ")):
                reason, _, rest = part.partition(" [")
                reasons[reason] = reasons.get(reason, 0) + int(rest.split("]")[0] or 0)
        if reasons:
            lines.append("")
            lines.append("Tensors left at default init, over all swept models, by reason:")
            lines.append("")
            for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
                lines.append(f"- {count} x {reason}")
        lines.append("")
        sections.append((g, rows))
    lines.append(SEMANTICS)
    for g, rows in sections:
        for src in SOURCES:
            rs = [r for r in rows.values() if r["source"] == src]
            if not rs:
                continue
            lines.append(f"## {src} — {GHN_LABELS.get(g, g)}")
            lines.append("")
            lines.append("| model | status | mode | tracer | params | predicted | left alone | nodes | time (s) | runs after |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|")
            for r in sorted(rs, key=lambda r: r["model"]):
                share = _pct(float(r["share_predicted"])) if r.get("share_predicted") else ""
                params = f"{int(r['params']) / 1e6:.1f}M" if r.get("params") else ""
                left = r.get("left_alone", "").replace("|", ";")
                left = left if len(left) <= 240 else left[:237] + "..."
                t = f"{float(r['seconds_total']):.1f}" if r.get("seconds_total") else ""
                lines.append(
                    f"| {r['model']} | {_status_cell(r)} | {r.get('mode', '')} | {r.get('tracer', '')} | {params} | "
                    f"{share} | {left} | {r.get('nodes', '')} | {t} | {r.get('runs_after', '')} |"
                )
            lines.append("")
    path = out_dir / "coverage.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--source",
        choices=[*SOURCES, "families", "all"],
        default="all",
        help="'families': every torchvision family but classification; 'all': everything",
    )
    ap.add_argument("--models", nargs="*", help="explicit models (torchvision names or timm/NAME)")
    ap.add_argument("--filter", help="only models whose name contains this substring")
    ap.add_argument("--limit", type=int, help="at most this many models (after skipping done ones)")
    ap.add_argument("--ghn", choices=sorted(GHN_FILES), default="ghn3_t")
    ap.add_argument("--ghn-file", help="GHN checkpoint to use instead of the fixture file")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per model (default 300)")
    ap.add_argument("--workers", type=int, default=1, help="models run at the same time (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per child (default 1)")
    ap.add_argument(
        "--meta-above", type=float, default=None, help="build models with more parameters on meta; decode only"
    )
    ap.add_argument("--out-dir", type=Path, default=REPO / "docs")
    ap.add_argument("--retry", action="store_true", help="rerun models whose last result is not ok")
    ap.add_argument("--report-only", action="store_true", help="only regenerate coverage.md from the CSVs")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)  # before any parallel op, so forked children do not inherit a thread pool
    import timm  # noqa: F401 - imported once here, shared by every child
    import torchvision  # noqa: F401 - likewise

    import ghn_init  # noqa: F401
    from ghn_init.hub.checkpoints import load_file

    args.out_dir.mkdir(parents=True, exist_ok=True)
    expected = {src: len(list_models(src)) for src in SOURCES}
    ghns = [g for g in GHN_FILES if (args.out_dir / f"coverage_{g}.csv").exists() or g == args.ghn]
    if args.report_only:
        print(write_markdown(args.out_dir, ghns, expected))
        return 0

    if args.models:
        names = list(args.models)
    else:
        if args.source == "all":
            sources = list(SOURCES)
        elif args.source == "families":
            sources = [s for s in SOURCES if s.startswith("torchvision.")]
        else:
            sources = [args.source]
        names = [n for s in sources for n in list_models(s)]
    if args.filter:
        names = [n for n in names if args.filter in n]
    csv_path = args.out_dir / f"coverage_{args.ghn}.csv"
    done = latest_rows(csv_path)
    todo = [n for n in names if n not in done or (args.retry and done[n]["status"] != "ok")]
    if args.limit is not None:
        todo = todo[: args.limit]
    if not args.quiet:
        print(f"{len(names)} models, {len(names) - len(todo)} already in {csv_path}, {len(todo)} to run", flush=True)

    ghn = load_file(Path(args.ghn_file) if args.ghn_file else FIXTURES / GHN_FILES[args.ghn]).eval()
    for p in ghn.parameters():
        p.requires_grad_(False)
    meta_above = int(args.meta_above) if args.meta_above is not None else None
    try:
        sweep(
            todo,
            ghn,
            csv_path,
            timeout=args.timeout,
            workers=max(1, args.workers),
            meta_above=meta_above,
            verbose=not args.quiet,
        )
    finally:
        path = write_markdown(args.out_dir, ghns, expected)
        if not args.quiet:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
