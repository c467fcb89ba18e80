"""``ghn-init compare``: fine-tune models from several init schemes and write results.json, results.md, curves.png."""

from __future__ import annotations

import argparse
import sys

from ..postprocess import POSTPROCESS_PARTS
from ..schemes import list_schemes
from .types import positive_int


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _cmd_compare(args: argparse.Namespace) -> int:
    import torch

    from ..harness import compare
    from ..harness.render import RESULT_FILES
    from ..outputs import check_output_folder, clear_outputs

    check_output_folder(args.out, "out", existing=RESULT_FILES, overwrite=args.overwrite)  # before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        results = _run(compare, args)
    except ImportError as e:  # an optional extra (scikit-learn for digits) is missing: one line, no traceback
        print(f"ghn-init compare: error: {e}", file=sys.stderr)
        return 2
    if args.overwrite:
        clear_outputs(args.out, RESULT_FILES)
    written = results.save(args.out)
    print(results.markdown(plot=None))
    print("wrote " + ", ".join(written.values()))
    return 0


def _run(compare, args: argparse.Namespace):
    return compare(
        args.models,
        args.inits,
        args.data,
        steps=args.steps,
        seeds=args.seeds,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        batch_size=args.batch_size,
        image_size=args.image_size,
        num_classes=args.num_classes,
        eval_at=args.eval_at,
        recalibrate=args.recalibrate_bn,
        calibration_images=args.calibration_images,
        per_class=args.per_class,
        reference=args.reference,
        device=args.device,
        progress=args.progress,
        download=args.download,
    )


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    from ..harness import runner

    p = subparsers.add_parser(
        "compare",
        help="fine-tune models from several init schemes (default, orthogonal, ghn:...) and compare",
        description="Fine-tune every model from every init scheme with every seed under identical conditions "
        "(same data order, same non-predicted tensors); write OUT/results.json, results.md and curves.png.",
    )
    p.add_argument(
        "--models",
        required=True,
        help="comma-separated: torchvision names, timm/NAME, small_vit, small_vgg (no normalization)",
    )
    p.add_argument(
        "--inits",
        default="default,orthogonal,ghn:bundled",
        help=f"comma-separated schemes: {', '.join(list_schemes())}, or ghn:SOURCE[+POSTPROCESS][+calibrate] "
        f"(POSTPROCESS: none, {', '.join(POSTPROCESS_PARTS)} joined by '+'; "
        "default: the GHN's own; +calibrate: calibrated on training images). A scheme that does not apply to a "
        "model fails that run only (results.json 'failed'). Default: %(default)s",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="comma-separated: digits (scikit-learn), shapes (drawn), an image folder, or torchvision:NAME[:ROOT] "
        "(ROOT: where the dataset lives, default ./data) (default %(default)s)",
    )
    p.add_argument(
        "--per-class",
        type=positive_int,
        default=None,
        help="train on K images per class (a seeded subset, the same for every scheme of a seed): few-shot "
        "(default: all images)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="a scheme of --inits to pair the others against: mean difference with a 95%% interval, "
        "wins/ties/losses, a leaderboard and ranks.png (default: none)",
    )
    p.add_argument(
        "--download", action="store_true", help="let torchvision download a torchvision:NAME dataset (default: off)"
    )
    p.add_argument("--steps", type=positive_int, default=200, help="optimizer steps per run (default %(default)s)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument(
        "--optimizer",
        choices=runner.OPTIMIZERS,
        default=runner.DEFAULT_OPTIMIZER,
        help="sgd uses Nesterov momentum 0.9 (default %(default)s)",
    )
    p.add_argument("--lr", type=float, default=runner.DEFAULT_LR, help="(peak) learning rate (default %(default)s)")
    p.add_argument(
        "--weight-decay", type=float, default=runner.DEFAULT_WEIGHT_DECAY, help="weight decay (default %(default)s)"
    )
    p.add_argument(
        "--schedule",
        choices=runner.SCHEDULES,
        default=runner.DEFAULT_SCHEDULE,
        help="learning-rate schedule (default %(default)s: warm-up, then annealing)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=runner.DEFAULT_BATCH_SIZE,
        help="images per step (default %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=32,
        help="side of the (square) input images in pixels (default %(default)s)",
    )
    p.add_argument(
        "--num-classes", type=positive_int, default=None, help="classifier outputs (default: the data's classes)"
    )
    p.add_argument("--eval-at", type=_ints, default=None, help="test checkpoints (default: 0,S/8,S/4,S/2,S)")
    p.add_argument(
        "--no-recalibrate-bn",
        dest="recalibrate_bn",
        action="store_false",
        help="test with the running BatchNorm statistics as trained (default: re-estimate them first)",
    )
    p.add_argument(
        "--calibration-images",
        type=positive_int,
        default=512,
        help="training images that re-estimate BN statistics and feed data-aware schemes (default %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="where models train: cpu, cuda, cuda:1, mps (default %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier comparison in --out (default: refuse, before any work)",
    )
    p.set_defaults(func=_cmd_compare)
