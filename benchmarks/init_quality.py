"""Does a GHN initialization help? Regenerates docs/init_quality.md and docs/init_quality.png with the harness.

The data (scikit-learn's 8x8 handwritten digits, upscaled to 32x32 RGB) and the architectures
(torchvision ResNet-18 and MobileNetV3-Small, a small torchvision ViT) were not used to train the
bundled GHN. This is ``ghn-init compare`` with fixed settings, one process per model:

    pip install 'ghn-init[compare]'
    python benchmarks/init_quality.py --jobs 2          # ~30-60 min on 2 busy CPU cores

The same table for your own models and data: ``ghn-init compare --models ... --inits ... --data ...``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path

from paths import REPO

MODELS = ("resnet18", "mobilenet_v3_small", "small_vit")
NO_DETILE = "ghn:bundled+orth+noise+dcbalance+nohead+nobias+nogain+noembed"
INITS = ("default", "orthogonal", "ghn:bundled", NO_DETILE, "ghn:bundled+none")
DESCRIPTIONS = {
    "default": "the model's own initialization (PyTorch / torchvision defaults)",
    "orthogonal": "`torch.nn.init.orthogonal_` on the same weight matrices the GHN's `orth` post-processing "
    "touches, everything else default: the GHN's contribution is the difference to this row",
    "ghn:bundled": "the bundled GHN with its recommended post-processing (its config)",
    NO_DETILE: "the recommendation without `detile` (the tiled copies of the decoder's block kept): the "
    "alternative measured against it",
    "ghn:bundled+none": "the bundled GHN's raw predictions, no post-processing",
}


# name -> (compare() keyword arguments, output file stem, how the docs describe it)
PROTOCOLS = {
    "default": ({}, "init_quality", "the harness defaults: SGD with Nesterov momentum, one-cycle lr 0.02, batch 32"),
    "adamw": (
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2, "schedule": "constant", "batch_size": 16},
        "init_quality_adamw",
        "AdamW at a constant lr 1e-3, batch 16 (the harness defaults before 2026-11-23)",
    ),
}


def _run_one(args: tuple) -> dict:
    model, opts = args
    import torch

    torch.set_num_threads(1)
    import ghn_init

    kwargs = PROTOCOLS[opts["protocol"]][0]
    results = ghn_init.compare(
        [model], list(opts["inits"]), "digits", steps=opts["steps"], seeds=opts["seeds"], progress=False, **kwargs
    )
    print(f"{model}: done", flush=True)
    return results.to_dict()


def _final(results, model: str) -> dict[str, tuple[float, float]]:
    """Scheme -> (mean, sd) of the final test accuracy of ``model``."""
    return {r["scheme"]: r["test_acc"][-1] for r in results.summary() if r["model"] == model}


def _verdicts(results) -> list[str]:
    lines = []
    for row_model in results.models:
        final = _final(results, row_model)
        if "ghn:bundled" not in final or "default" not in final:
            continue
        g, d = final["ghn:bundled"][0], final["default"][0]
        o = final.get("orthogonal", (float("nan"),))[0]
        verdict = "at or above" if g >= d else "**below**"
        lines.append(
            f"- {row_model}: bundled GHN {100 * g:.1f}% vs default {100 * d:.1f}% ({verdict} default; "
            f"orthogonal {100 * o:.1f}%; mean test accuracy after {results.config['steps']} steps)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--inits", default=",".join(INITS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="default", help="fine-tuning recipe (see PROTOCOLS)")
    parser.add_argument("--jobs", type=int, default=1, help="models run in parallel processes (1 thread each)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--raw", type=Path, default=None, help="raw results (default benchmarks/results/STEM)")
    parser.add_argument("--render-only", action="store_true", help="re-render the docs from RAW/results.json")
    args = parser.parse_args()

    from ghn_init import CompareResults, load_ghn
    from ghn_init.harness import render

    kwargs, stem, recipe = PROTOCOLS[args.protocol]
    raw = args.raw or REPO / "benchmarks" / "results" / stem
    seeds_given = [int(s) for s in args.seeds.split(",")]
    opts = {"inits": args.inits.split(","), "steps": args.steps, "seeds": seeds_given, "protocol": args.protocol}
    work = [(m, opts) for m in args.models.split(",")]
    if args.render_only:
        results = CompareResults.from_dict(json.loads((raw / "results.json").read_text()))
    else:
        if args.jobs > 1:
            with mp.get_context("spawn").Pool(args.jobs) as pool:
                parts = pool.map(_run_one, work)
        else:
            parts = [_run_one(w) for w in work]
        results = CompareResults.merge(parts)
        results.config["jobs"] = args.jobs
        results.config["protocol"] = args.protocol
        raw.mkdir(parents=True, exist_ok=True)
        results.save(raw)
    cfg = results.config  # what the rendered results were run with (not this command line, under --render-only)
    protocol = cfg.get("protocol", "default")
    _, stem, recipe = PROTOCOLS[protocol]
    render.plot(results, args.out_dir / f"{stem}.png")
    seeds = ",".join(str(s) for s in cfg["seeds"])
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in PROTOCOLS[protocol][0].items())
    other = [p for p in PROTOCOLS if p != protocol][0]
    ghn = load_ghn("bundled")
    lines = [
        "# Initialization quality: the bundled GHN vs. default and orthogonal init",
        "",
        f"Fine-tuning recipe: {recipe}. The same table with {PROTOCOLS[other][2]}: "
        f"[{PROTOCOLS[other][1]}.md]({PROTOCOLS[other][1]}.md).",
        "",
        f"Generated by `python benchmarks/init_quality.py --protocol {protocol} --jobs {cfg.get('jobs', 1)}` "
        f"({len(results.runs)} runs, {sum(r.seconds for r in results.runs) / 60:.0f} min of run time in total; one "
        "process per model, 1 CPU thread each, on a 2-core machine); the same as "
        f"`ghn-init compare --models {','.join(cfg['models'])} --inits {','.join(cfg['inits'])} --data digits "
        f"--steps {cfg['steps']} --seeds {seeds}{flags} --out DIR`.",
        "",
        f"- GHN: `bundled` ({ghn.config.kind}, hid {ghn.config.hid}, {ghn.num_parameters():,} parameters), "
        f"recommended post-processing `{ghn.config.postprocess}` (see `ghn_init/bundled/README.md`).",
        "- architectures: torchvision `resnet18`, `mobilenet_v3_small` (10 classes, 32x32 input) and "
        "`small_vit` (a torchvision `VisionTransformer`: 4 layers, width 128, 4x4 patches). Neither the data "
        "nor these architectures were used to train the GHN.",
        "- init schemes:",
        *[f"  - `{s}`: {DESCRIPTIONS.get(s, s)}" for s in cfg["inits"]],
        "",
        "## Result",
        "",
        *_verdicts(results),
        "",
        "Notes:",
        "",
        *_spreads(results),
        "- How the choices were made: the recommended post-processing's `nohead+nobias+nogain` came from "
        "single-seed, 100-step screening runs on this benchmark (digits, seed 0, AdamW); `noembed` from a "
        "diagnosis (the GHN, trained without any transformer, predicts position embeddings ten times the scale of "
        "the model's own) checked on seeds 3-7, not the seeds of this table; `dcbalance` and `detile` from a "
        "diagnosis of the predicted weights (half the energy of each 3x3 kernel in its spatial mean, against 1/9 "
        "for a random kernel; wide layers weighting input channels 64 apart alike), screened on this table's seeds "
        "0-2 and on the drawn shapes before they were adopted. The harness's default "
        "recipe was chosen "
        "on default-init runs alone (a recipe where the small ViT learns, with a small spread between seeds; it is "
        "also the recipe issue 8's reporter used), but GHN rows of a 150-step variant of it (seeds 0-3) had been "
        "seen before. "
        "The `default`, `orthogonal` and raw-prediction rows involve no choice.",
        "- Digits is where the choices were looked at; a second dataset, drawn shapes (`init_quality_shapes.md`, "
        "`benchmarks/heldout_shapes.py`), was used to screen post-processing: `dcbalance` and `detile` (adopted), "
        "`keepnorm` (not adopted).",
        "- Three seeds do not resolve differences smaller than the spreads above: six more seeds (3-8, screening "
        "runs with the default recipe, paired with default init), and what was measured and not adopted "
        "(training this GHN longer, training it through its post-processing, capping the matrices' scale), are in "
        "the bundled GHN's card, "
        "`ghn_init/bundled/README.md`.",
        "- BatchNorm statistics are re-estimated before every test for every scheme (the harness default): without "
        "it, eval-mode accuracy right after a GHN init measures the stale running statistics, not the weights.",
        "",
        "## Table",
        "",
        render.markdown(results, f"{stem}.png"),
    ]
    out = args.out_dir / f"{stem}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}, {args.out_dir / f'{stem}.png'} and {raw}")


def _spreads(results) -> list[str]:
    """Seed-to-seed spread of each model's default init, and how the GHN compares with plain orthogonal init."""
    lines = []
    for model in results.models:
        final = _final(results, model)
        if "default" in final:
            sd = 100 * final["default"][1]
            lines.append(f"- {model}: default init's test accuracy varies by {sd:.1f} points (sd) between seeds.")
        if "ghn:bundled" in final and "orthogonal" in final:
            diff = 100 * (final["ghn:bundled"][0] - final["orthogonal"][0])
            lines.append(f"  The GHN's own contribution (bundled minus orthogonal): {diff:+.1f} points.")
    return lines


if __name__ == "__main__":
    main()
