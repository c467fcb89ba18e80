"""Writing :class:`~ghn_init.compare.Results`: results.json, a Markdown table, a PNG of the curves."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from .runner import Results

__all__ = ["markdown", "plot", "save"]


def _pm(mean_sd: tuple[float, float], scale: float = 1.0, digits: int = 1) -> str:
    m, s = mean_sd
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def markdown(results: Results, plot_file: Optional[str] = "curves.png") -> str:
    """A Markdown report: the setup and a mean ± sd table (test accuracy in %, training loss)."""
    c = results.config
    rows = results.summary()
    steps = c["eval_at"]
    lines = [
        "| model | init | " + " | ".join(f"acc @{s}" for s in steps) + f" | loss @0 | loss @{steps[-1]} | s/run |",
        "|---|---|" + "---:|" * (len(steps) + 3),
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['scheme']} | "
            + " | ".join(_pm(a, 100) for a in r["test_acc"])
            + f" | {_pm(r['step0_loss'], digits=3)} | {_pm(r['train_loss'][-1], digits=3)} | {r['seconds'][0]:.0f} |"
        )
    head = [
        f"- data: {c['data']}",
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
        f"- mean ± sample standard deviation over {len(c['seeds'])} seed(s); {c['threads']} CPU thread(s), "
        f"torch {c['torch']}",
        "",
    ]
    tail = ["", f"![training loss and test accuracy]({plot_file})", ""] if plot_file else [""]
    return "\n".join(head + lines + tail)


def plot(results: Results, path: Union[str, os.PathLike]) -> None:
    """Training loss (smoothed) and test accuracy per step, one column per model, mean ± sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F

    models = results.models
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 7), squeeze=False)
    for col, model in enumerate(models):
        for scheme in results.schemes:
            runs = results.select(model, scheme)
            if not runs:
                continue
            losses = torch.tensor([r.loss_curve for r in runs], dtype=torch.float32)
            smooth = F.avg_pool1d(losses.unsqueeze(1), 9, stride=1, padding=4, count_include_pad=False).squeeze(1)
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
        axes[0, col].set(title=model, xlabel="step", ylabel="training loss (9-step mean)", yscale="log")
        axes[1, col].set(xlabel="step", ylabel="test accuracy (%)", ylim=(0, 100))
        axes[0, col].legend(fontsize=8)
        axes[1, col].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Fine-tuning on {results.config['data'].split(':')[0]}: mean ± sd over {len(results.config['seeds'])} seed(s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save(results: Results, out: Union[str, os.PathLike], with_plot: bool = True) -> dict[str, str]:
    """Write results.json, results.md and (if matplotlib is installed) curves.png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": str(out / "results.json")}
    (out / "results.json").write_text(json.dumps(results.to_dict(), indent=1))
    png = None
    if with_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            png = None
        else:
            plot(results, out / "curves.png")
            png = "curves.png"
            written["png"] = str(out / png)
    (out / "results.md").write_text("# Init comparison\n\n" + markdown(results, png))
    written["md"] = str(out / "results.md")
    return written
