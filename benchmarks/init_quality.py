"""Does a GHN initialization help? Fine-tune held-out architectures from default init and from GHN predictions.

The data (scikit-learn's 8x8 handwritten digits, upscaled to 32x32 RGB) and the architectures
(torchvision ResNet-18 and MobileNetV3-Small, a small torchvision ViT) were not used to train
the bundled GHN. For every architecture, initialization and seed the same images are seen in
the same order for the same number of AdamW steps; we record the training loss at every step
and the test accuracy at a few steps, then write a Markdown table and a plot.

    pip install 'ghn-init[bench]'
    python benchmarks/init_quality.py            # ~10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import ghn_init
from ghn_init.train.fractals import IMAGENET_MEAN, IMAGENET_STD

NUM_CLASSES = 10
IMAGE_SIZE = 32
CALIBRATION_IMAGES = 512  # training images that re-estimate BatchNorm statistics before each test
INITS = {
    "default": "PyTorch default init",
    "ghn": "GHN predicts all parameters",
    "ghn-keep-head": "GHN predicts all but the classifier",
}


def small_vit() -> nn.Module:
    """A 4-layer ViT for 32x32 images: 64 patches of 4x4, width 128."""
    return torchvision.models.VisionTransformer(
        image_size=IMAGE_SIZE, patch_size=4, num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256,
        num_classes=NUM_CLASSES,
    )


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=NUM_CLASSES),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=NUM_CLASSES),
    "vit_small_32px": small_vit,
}


def load_digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as normalized 3x32x32 tensors; a stratified 75/25 train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = images.expand(-1, 3, -1, -1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    images = ((images - mean) / std).contiguous()
    labels = torch.tensor(digits.target)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=0.25, random_state=seed, stratify=digits.target
    )
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


@torch.no_grad()
def test_accuracy(model: nn.Module, calibration: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Eval-mode accuracy of a copy whose BatchNorm statistics are re-estimated on ``calibration`` images.

    Running statistics move slowly (MobileNetV3 uses momentum 0.01), so after a few hundred
    steps they do not yet describe the features and eval mode would measure them, not the
    weights. Re-estimating them (a cumulative average over training images) fixes that for
    every init alike; the copy and a forked RNG keep the training run itself untouched.
    """
    model = copy.deepcopy(model).train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    if norms:
        with torch.random.fork_rng(devices=[]):  # dropout draws here must not shift the training run's RNG
            for x in calibration.split(128):
                model(x)
    model.eval()
    correct = sum(
        (model(x).argmax(1) == y).sum().item() for x, y in zip(images.split(256), labels.split(256), strict=True)
    )
    return correct / len(labels)


def make_model(arch: str, init: str, seed: int, ghn: ghn_init.GHN) -> nn.Module:
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch]()
    if init != "default":
        ghn_init.apply(model, ghn, predict_classifier=init == "ghn", input_size=(3, IMAGE_SIZE, IMAGE_SIZE))
    return model


def fine_tune(
    model: nn.Module,
    data: tuple[torch.Tensor, ...],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    eval_at: set[int],
) -> dict[str, list]:
    """AdamW on shuffled batches (order fixed by ``seed``); loss per step, test accuracy at ``eval_at``."""
    train_x, train_y, test_x, test_y = data
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_y), generator=generator)
    losses, accuracies = [], {}
    model.train()
    position = 0
    for step in range(steps + 1):
        if step in eval_at:
            accuracies[step] = test_accuracy(model, train_x[:CALIBRATION_IMAGES], test_x, test_y)
        if step == steps:
            break
        if position + batch_size > len(order):
            order, position = torch.randperm(len(train_y), generator=generator), 0
        batch = order[position : position + batch_size]
        position += batch_size
        loss = F.cross_entropy(model(train_x[batch]), train_y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"loss": losses, "test_acc": [accuracies[s] for s in sorted(accuracies)]}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _window_mean(losses: list[float], end: int, width: int = 10) -> float:
    """Training loss averaged over the ``width`` steps before ``end`` (single steps are noisy)."""
    window = losses[max(0, end - width) : end] if end else losses[:1]
    return statistics.fmean(window)


def write_report(results: dict, args: argparse.Namespace, ghn_info: str, path: Path) -> None:
    eval_at = results["eval_at"]
    lines = [
        "# Initialization quality: GHN vs. default init",
        "",
        "Generated by `python benchmarks/init_quality.py "
        + " ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("steps", "seeds", "batch_size", "lr"))
        + f"` in {results['seconds'] / 60:.1f} min ({torch.get_num_threads()} CPU threads).",
        "",
        f"- GHN: {ghn_info}",
        "- data: scikit-learn `load_digits` (1,797 8x8 digits, upscaled to 32x32 RGB, ImageNet-normalized), "
        f"stratified 75/25 split: {results['train_size']} training / {results['test_size']} test images. "
        "Neither the data nor the architectures were used to train the GHN.",
        "- architectures: torchvision `resnet18` and `mobilenet_v3_small` (unchanged, 10 classes, 32x32 input), "
        "a torchvision `VisionTransformer` (4 layers, width 128, 4x4 patches, 32x32 input).",
        f"- fine-tuning: AdamW lr {args.lr}, weight decay 0.01, batch {args.batch_size}, {args.steps} steps, "
        f"seeds {list(range(args.seeds))} (seed fixes the default init, the data order and the non-predicted tensors).",
        f"- test accuracy: eval mode, after re-estimating BatchNorm running statistics on {CALIBRATION_IMAGES} "
        "training images (a GHN predicts no running statistics, and MobileNetV3's momentum of 0.01 leaves them "
        "far from converged after 200 steps); the same for every init, training itself is untouched.",
        "- training loss: mean of the 10 steps before the given step (step 0: the first batch).",
        "",
        "Mean ± standard deviation over seeds:",
        "",
        "| architecture | init | " + " | ".join(f"test acc @{s}" for s in eval_at) + " | "
        + " | ".join(f"train loss @{s}" for s in eval_at) + " |",
        "|---|---|" + "---|" * (2 * len(eval_at)),
    ]
    for arch, by_init in results["runs"].items():
        for init, runs in by_init.items():
            accs = [_mean_std([r["test_acc"][i] for r in runs]) for i in range(len(eval_at))]
            losses = [_mean_std([_window_mean(r["loss"], s) for r in runs]) for s in eval_at]
            lines.append(
                f"| {arch} | {init} | "
                + " | ".join(f"{100 * m:.1f} ± {100 * s:.1f}" for m, s in accs)
                + " | "
                + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in losses)
                + " |"
            )
    lines += ["", "![training loss and test accuracy per step](init_quality.png)", ""]
    path.write_text("\n".join(lines))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(results["runs"])
    fig, axes = plt.subplots(2, len(archs), figsize=(5 * len(archs), 7), squeeze=False)
    for col, arch in enumerate(archs):
        for init, runs in results["runs"][arch].items():
            losses = torch.tensor([r["loss"] for r in runs])
            smooth = F.avg_pool1d(losses.unsqueeze(1), 9, stride=1, padding=4, count_include_pad=False).squeeze(1)
            mean, std = smooth.mean(0), smooth.std(0) if len(runs) > 1 else torch.zeros_like(smooth[0])
            (line,) = axes[0, col].plot(mean, label=init)
            axes[0, col].fill_between(range(len(mean)), mean - std, mean + std, alpha=0.2, color=line.get_color())
            accs = torch.tensor([r["test_acc"] for r in runs]) * 100
            axes[1, col].errorbar(results["eval_at"], accs.mean(0), yerr=accs.std(0) if len(runs) > 1 else None,
                                  label=init, marker="o", capsize=3, color=line.get_color())
        axes[0, col].set(title=arch, xlabel="step", ylabel="training loss (9-step mean)", yscale="log")
        axes[1, col].set(xlabel="step", ylabel="test accuracy (%)", ylim=(0, 100))
        axes[0, col].legend()
        axes[1, col].legend(loc="lower right")
    fig.suptitle("Fine-tuning on digits (32x32): mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ghn", default="bundled", help="GHN to evaluate (default: the bundled one)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--raw", type=Path, default=Path(__file__).resolve().parent / "results" / "init_quality.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    data = load_digits_split()
    ghn = ghn_init.load_ghn(args.ghn)
    ghn_info = f"`{args.ghn}` ({ghn.config.kind}, hid {ghn.config.hid}, {ghn.num_parameters():,} parameters)"
    eval_at = sorted({0, args.steps // 8, args.steps // 4, args.steps // 2, args.steps})
    results: dict = {"eval_at": eval_at, "train_size": len(data[1]), "test_size": len(data[3]), "runs": {}}
    for arch in args.archs:
        results["runs"][arch] = {}
        for init in INITS:
            runs = []
            for seed in range(args.seeds):
                model = make_model(arch, init, seed, ghn)
                runs.append(fine_tune(model, data, args.steps, args.batch_size, args.lr, seed, set(eval_at)))
                print(f"{arch:20s} {init:14s} seed {seed}: test acc {runs[-1]['test_acc']} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            results["runs"][arch][init] = runs
    results["seconds"] = time.perf_counter() - started

    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.raw.parent.mkdir(parents=True, exist_ok=True)
    args.raw.write_text(json.dumps(results))
    write_report(results, args, ghn_info, args.out_dir / "init_quality.md")
    plot(results, args.out_dir / "init_quality.png")
    print(f"wrote {args.out_dir / 'init_quality.md'}, {args.out_dir / 'init_quality.png'} and {args.raw}")


if __name__ == "__main__":
    main()
