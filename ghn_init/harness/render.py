"""Writing comparison results: results.json, a Markdown report, PNGs of the curves and of the ranks.

Works on any object shaped like :class:`~ghn_init.harness.results.Results` and imports nothing from the runner or
the results module (no import cycle).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["markdown", "leaderboard_markdown", "paired_markdown", "plot", "plot_ranks", "save"]


def trailing_mean(curves: Any, window: int) -> Any:
    """Each step's mean over the ``window`` steps ending at it (fewer at the start), per row of ``curves``: the
    smoothing the table's "loss @s" uses, so the plot and the table show the same numbers.

    Example:
        >>> import torch
        >>> trailing_mean(torch.tensor([[1.0, 3.0, 5.0]]), 2).tolist()
        [[1.0, 2.0, 4.0]]
    """
    import torch
    import torch.nn.functional as F

    n = curves.shape[1]
    sums = torch.cumsum(F.pad(curves, (1, 0)), 1)
    end = torch.arange(1, n + 1)
    start = (end - window).clamp(min=0)
    return (sums[:, end] - sums[:, start]) / (end - start)


def _pm(mean_sd: tuple[float, float], scale: float = 1.0, digits: int = 1, spread: bool = True) -> str:
    """``mean ± sd``; without ``spread`` (one seed has none: "± 0.0" would claim a measured zero) the mean alone."""
    m, s = mean_sd
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}" if spread else f"{scale * m:.{digits}f}"


def _num(x: float, digits: int = 1, scale: float = 1.0, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{scale * x:+.{digits}f}" if sign else f"{scale * x:.{digits}f}"


def _data_names(results: Any) -> str:
    data = results.config["data"]
    return "; ".join(data) if isinstance(data, list) else data


def paired_markdown(results: Any, reference: str) -> str:
    """One row per dataset, model and scheme: mean difference of final test accuracy to ``reference`` (points) with
    its 95% t-interval over paired seeds, and the verdict."""
    lines = [
        f"| data | model | init | Δ acc vs {reference} (points) | 95% interval | seeds | verdict |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for r in results.paired(reference):
        lo, hi = _num(r["low"], scale=100, sign=True), _num(r["high"], scale=100, sign=True)
        lines.append(
            f"| {r['data']} | {r['model']} | {r['scheme']} | {_num(r['mean'], scale=100, sign=True)} | "
            f"[{lo}, {hi}] | {len(r['seeds'])} | {r['verdict']} |"
        )
    return "\n".join(lines)


def leaderboard_markdown(results: Any, reference: Optional[str] = None) -> str:
    """Schemes by mean rank over dataset x model cells, with wins/ties/losses against ``reference``."""
    rows = results.leaderboard(reference)
    head = "| rank | init | mean rank | cells | first or level | mean acc (%) |"
    rule = "|---:|---|---:|---:|---:|---:|"
    if reference:
        head += f" Δ vs {reference} (points) | W/T/L vs {reference} |"
        rule += "---:|---|"
    head += " not applicable |"
    rule += "---:|"
    lines = [head, rule]
    for i, r in enumerate(rows, 1):
        line = (
            f"| {i} | {r['scheme']} | {_num(r['mean_rank'], 2)} | {r['cells']} | {r['first_or_level']}/{r['cells']} | "
            f"{_num(r['mean_acc'], scale=100)} |"
        )
        if reference:
            wtl = "–" if r["scheme"] == reference else f"{r['wins']}/{r['ties']}/{r['losses']}"
            line += f" {_num(r['mean_diff'], scale=100, sign=True)} | {wtl} |"
        line += f" {r['failed']} |"
        lines.append(line)
    return "\n".join(lines)


def markdown(results: Any, plot_file: Optional[str] = "curves.png", ranks_file: Optional[str] = None) -> str:
    """A Markdown report: the setup, a mean ± sd table (test accuracy in %, training loss), the runs that failed,
    and with a reference scheme in the config the paired table and the leaderboard."""
    c = results.config
    rows = results.summary()
    steps = c["eval_at"]
    several = len(results.datasets) > 1
    spread = len(c["seeds"]) > 1
    lines = [
        ("| data " if several else "")
        + "| model | init | "
        + " | ".join(f"acc @{s}" for s in steps)
        + f" | loss @0 | loss @{steps[-1]} | s/run |",
        ("|---" if several else "") + "|---|---|" + "---:|" * (len(steps) + 3),
    ]
    for r in rows:
        lines.append(
            (f"| {r['data']} " if several else "")
            + f"| {r['model']} | {r['scheme']} | "
            + " | ".join(_pm(a, 100, spread=spread) for a in r["test_acc"])
            + f" | {_pm(r['step0_loss'], digits=3, spread=spread)}"
            + f" | {_pm(r['train_loss'][-1], digits=3, spread=spread)} | {r['seconds'][0]:.0f} |"
        )
    per_class = c.get("per_class")
    few = f"; training on {per_class} images per class (a subset per seed)" if per_class else ""
    head = [
        f"- data: {_data_names(results)}{few}",
        f"- fine-tuning: {c['optimizer']} lr {c['lr']} ({c['schedule']}), weight decay {c['weight_decay']}, "
        f"batch {c['batch_size']}, {c['steps']} steps, {c['image_size']}x{c['image_size']} images, seeds {c['seeds']}",
        "- test accuracy (%) in eval mode"
        + (
            f", BatchNorm statistics re-estimated on {c['calibration_images']} training images first"
            if c["recalibrate_bn"]
            else ""
        )
        + f"; training loss at step s: mean of the {c['loss_window']} steps before it "
        "(@0: the first batch, before any update)",
        (
            f"- mean ± sample standard deviation over {len(c['seeds'])} seeds"
            if spread
            else "- one seed: its values (no spread between seeds to show)"
        )
        + f"; {c['threads']} CPU thread(s), torch {c['torch']}",
        "",
    ]
    tail = ["", f"![training loss and test accuracy]({plot_file})", ""] if plot_file else [""]
    failed = getattr(results, "failed", [])
    if failed:
        tail += ["Runs that did not start (the scheme does not apply):", ""]
        seen = set()
        for f in failed:
            key = (f.data, f.model, f.scheme)
            if key not in seen:
                seen.add(key)
                tail.append(f"- {f.data + ' / ' if several else ''}{f.model} / {f.scheme}: {f.error}")
        tail.append("")
    reference = c.get("reference")
    if reference:
        tail += [
            f"## Paired against `{reference}`",
            "",
            "Final test accuracy minus the reference's on the same seed (same data order, same untouched tensors); "
            "mean over seeds with a 95% Student-t interval; win/loss: the interval excludes 0.",
            "",
            paired_markdown(results, reference),
            "",
            "## Leaderboard",
            "",
            "Mean rank of final test accuracy over dataset x model cells (1 = best); first or level: cells where the "
            "scheme is best or its paired 95% interval against the best includes 0.",
            "",
            leaderboard_markdown(results, reference),
            "",
        ]
        if ranks_file:
            tail += [f"![ranks per dataset and model]({ranks_file})", ""]
    return "\n".join(head + lines + tail)


def plot(results: Any, path: Union[str, os.PathLike]) -> None:
    """Training loss (smoothed) and test accuracy per step, one column per dataset x model, mean ± sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    cells = [(d, m) for d in results.datasets for m in results.models if results.select(m, data=d)]
    fig, axes = plt.subplots(2, len(cells), figsize=(5 * len(cells), 7), squeeze=False)
    window = int(results.config.get("loss_window", 10))  # the table's window, so plot and table agree
    for col, (data, model) in enumerate(cells):
        for scheme in results.schemes:
            runs = results.select(model, scheme, data)
            if not runs:
                continue
            losses = torch.tensor([r.loss_curve for r in runs], dtype=torch.float32)
            smooth = trailing_mean(losses, window)
            mean = smooth.mean(0)
            sd = smooth.std(0) if len(runs) > 1 else torch.zeros_like(mean)
            (line,) = axes[0, col].plot(mean.numpy(), label=scheme)
            axes[0, col].fill_between(
                range(len(mean)), (mean - sd).numpy(), (mean + sd).numpy(), alpha=0.2, color=line.get_color()
            )
            acc = torch.tensor([r.test_acc for r in runs]) * 100
            axes[1, col].errorbar(
                runs[0].steps,
                acc.mean(0).numpy(),
                yerr=acc.std(0).numpy() if len(runs) > 1 else None,
                label=scheme,
                marker="o",
                capsize=3,
                color=line.get_color(),
            )
        title = f"{data}: {model}" if len(results.datasets) > 1 else model
        axes[0, col].set(title=title, xlabel="step", ylabel=f"training loss (mean of {window} steps)", yscale="log")
        axes[1, col].set(xlabel="step", ylabel="test accuracy (%)", ylim=(0, 100))
        axes[0, col].legend(fontsize=8)
        axes[1, col].legend(loc="lower right", fontsize=8)
    names = ", ".join(d.split(":")[0] for d in results.datasets)
    fig.suptitle(f"Fine-tuning on {names}: mean ± sd over {len(results.config['seeds'])} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ranks(results: Any, path: Union[str, os.PathLike], reference: Optional[str] = None) -> None:
    """Each scheme's rank in every dataset x model cell (dots) and its mean rank (bar), best at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.leaderboard(reference) if r["cells"]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
    n = len(results.schemes)
    for y, r in enumerate(reversed(rows)):
        ax.barh(y, r["mean_rank"], color="tab:blue", alpha=0.3)
        ranks = list(r["ranks"].values())
        ax.plot(ranks, [y] * len(ranks), "o", color="tab:blue", alpha=0.6, markersize=4)
    ax.set_yticks(range(len(rows)), [r["scheme"] for r in reversed(rows)], fontsize=8)
    ax.set(xlabel="rank of final test accuracy (1 = best); bar: mean, dots: each dataset x model", xlim=(0, n + 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


RESULT_FILES = ("results.json", "results.md", "curves.png", "ranks.png")  # what save writes in its folder


def save(results: Any, out: Union[str, os.PathLike], with_plot: bool = True) -> dict[str, str]:
    """Write results.json, results.md and (if matplotlib is installed) curves.png and, with a reference, ranks.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": str(out / "results.json")}
    (out / "results.json").write_text(json.dumps(results.to_dict(), indent=1))
    png = ranks = None
    if with_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            png = None
        else:
            plot(results, out / "curves.png")
            png = "curves.png"
            written["png"] = str(out / png)
            if results.config.get("reference"):
                plot_ranks(results, out / "ranks.png", results.config["reference"])
                ranks = "ranks.png"
                written["ranks"] = str(out / ranks)
    (out / "results.md").write_text("# Init comparison\n\n" + markdown(results, png, ranks))
    written["md"] = str(out / "results.md")
    return written
