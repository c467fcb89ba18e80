"""Which init should I use? Regenerates docs/leaderboard.md and docs/leaderboard.png with one command.

Every built-in init scheme (``ghn_init.list_schemes()``) on five architectures from five families, on three data
regimes (digits with every training image, digits with 10 images per class, drawn shapes), fine-tuned with the
harness's default recipe, paired against ``default`` seed by seed:

    pip install 'ghn-init[compare]'
    python benchmarks/leaderboard.py --jobs 2                  # the full table: many CPU hours, see --help
    python benchmarks/leaderboard.py --smoke --jobs 2          # proves the command in a few minutes

The full table is too long for one sitting on a few CPU cores, so every (regime, model, seed) is a job whose runs
are kept in ``benchmarks/results/leaderboard/jobs/`` as soon as it ends: the same command again runs only the
(scheme, seed) pairs it lacks and rebuilds the page from everything kept (a run depends only on its model, scheme,
seed, data and recipe, not on which other schemes ran with it). ``--refresh 'ghn:*'`` drops the kept runs of the
matching schemes first (after a change to what they compute); ``--collect`` only rebuilds the page from what is
kept.

Screening and confirmation, in the same command: every scheme runs on the screening seeds (``--seeds``, default
0-4). Once that table is complete, the choice it makes is confirmed on seeds no choice has seen
(``--confirm-seeds``, default 100-104): per model, the strongest alternative a user could pick (the screening's best
scheme by mean rank that is not the offline path ``ghn:bundled`` / ``ghn:bundled+calibrate``) runs again with
``default`` and the offline path, and the README's "use" column comes from these confirmation runs only: the
offline path where its paired 95% interval against that alternative includes 0 or lies above it in every regime,
else the alternative. ``--confirm-seeds ''`` skips the confirmation.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing as mp
import time
from pathlib import Path

from paths import REPO

MODELS = ("resnet18", "mobilenet_v3_small", "timm/convnext_atto", "small_vit", "small_vgg")
FAMILIES = {
    "resnet18": "ResNet (torchvision, BatchNorm)",
    "mobilenet_v3_small": "MobileNet (torchvision, BatchNorm, squeeze-excitation)",
    "timm/convnext_atto": "ConvNeXt (timm, LayerNorm)",
    "small_vit": "ViT (torchvision, 4 layers, width 128, 4x4 patches)",
    "small_vgg": "VGG-style CNN (6 convolutions, no normalization at all)",
}
# (data spec, images per class or None for all, label on the page), by key
REGIMES = {
    "digits": ("digits", None, "digits"),
    "digits-10": ("digits", 10, "digits, 10/class"),
    "shapes": ("shapes", None, "shapes"),
}
SCREENING_SEEDS = (0, 1, 2, 3, 4)
CONFIRMATION_SEEDS = (100, 101, 102, 103, 104)
REFERENCE = "default"

SMOKE = {
    "models": ("resnet18", "small_vit"),
    "inits": ("default", "orthogonal", "lsuv", "mimetic", "zero-residual", "ghn:bundled", "ghn:bundled+calibrate"),
    "regimes": ("digits-10", "shapes"),
    "steps": 20,
    "seeds": (0, 1),
}


def all_schemes() -> list[str]:
    import ghn_init

    return ghn_init.list_schemes()


def _job_file(raw: Path, regime: str, model: str, steps: int, seed: int) -> Path:
    return raw / "jobs" / f"{regime}__{model.replace('/', '_')}__steps{steps}__seed{seed}.json"


def _kept(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _schemes_in(part: dict) -> set[str]:
    return {r["scheme"] for r in part.get("runs", [])} | {f["scheme"] for f in part.get("failed", [])}


def _run_one(job: tuple) -> str:
    """Run the missing schemes of one (regime, model, seed) and keep them with what the job file already has."""
    model, data, per_class, inits, steps, seed, path = job
    import torch

    torch.set_num_threads(1)
    import ghn_init
    from ghn_init import CompareResults

    started = time.perf_counter()
    results = ghn_init.compare(
        [model], list(inits), data, steps=steps, seeds=[seed], per_class=per_class, progress=False,
    )  # fmt: skip
    kept = _kept(Path(path))
    merged = CompareResults.merge([kept, results.to_dict()]) if kept else results
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).with_suffix(".partial").write_text(json.dumps(merged.to_dict()))
    Path(path).with_suffix(".partial").replace(path)
    message = f"{data} per_class={per_class} {model} seed {seed} ({len(inits)} schemes): "
    print(message + f"{time.perf_counter() - started:.0f} s", flush=True)
    return path


def _refresh(raw: Path, patterns: list[str]) -> None:
    """Drop the kept runs (and failures) of schemes matching any of ``patterns``."""
    for path in sorted((raw / "jobs").glob("*.json")):
        part = _kept(path)
        keep = lambda entry: not any(fnmatch.fnmatchcase(entry["scheme"], p) for p in patterns)  # noqa: E731
        part["runs"] = [r for r in part.get("runs", []) if keep(r)]
        part["failed"] = [f for f in part.get("failed", []) if keep(f)]
        path.write_text(json.dumps(part))


def combined(parts: dict[str, object]):
    """One Results-like object over every regime: each regime's runs under its label as the dataset name (the
    stats and the rank plot only read runs, datasets, models and schemes)."""
    from ghn_init.harness import Failure, Results, Run

    first = next(iter(parts.values()))
    out = Results(dict(first.config), [], [])
    for label, res in parts.items():
        out.runs += [Run(**{**r.__dict__, "data": label}) for r in res.runs]
        out.failed += [Failure(**{**f.__dict__, "data": label}) for f in res.failed]
    return out


def page(parts: dict, whole, args, seconds: float, verdicts: dict | None = None) -> str:
    from ghn_init.harness import render

    seeds = list(args.seeds)
    which = (
        "screening seeds: choices may be made from these numbers, and must be confirmed on seeds "
        f"{', '.join(map(str, CONFIRMATION_SEEDS))}"
        if set(seeds) <= set(SCREENING_SEEDS)
        else "confirmation seeds: no choice was made on them"
        if set(seeds) <= set(CONFIRMATION_SEEDS)
        else "seeds outside the screening/confirmation split"
    )
    lines = [
        "# Which init should I use? The leaderboard",
        "",
        f"Generated by `python benchmarks/leaderboard.py {' '.join(args.argv)}` ({len(whole.runs)} runs, "
        f"{len(whole.failed)} not applicable; {sum(r.seconds for r in whole.runs) / 3600:.1f} CPU-hours of runs at "
        f"1 thread each, kept in `benchmarks/results/leaderboard/jobs/`; this invocation {seconds / 60:.0f} min).",
        "",
    ]
    if args.smoke:
        lines += [
            "**Smoke configuration**: proves the command only. Too few steps and seeds to rank anything; do not "
            "read the numbers below as a result.",
            "",
        ]
    elif not args.full:
        lines += [
            "**Partial run**: not every regime, model or the five seeds of the full leaderboard "
            "(`python benchmarks/leaderboard.py --jobs N`); read it as a screening result for what it covers.",
            "",
        ]
    lines += [
        f"- seeds {seeds} ({which})",
        f"- {args.steps} steps of the harness's default recipe (SGD Nesterov, one-cycle lr 0.02, batch 32, "
        "32x32 images, BatchNorm statistics re-estimated before each test); the few-shot regime trains on a seeded "
        "subset per seed, the same for every scheme",
        f"- reference: `{REFERENCE}`; Δ: final test accuracy minus the reference's on the same seed, mean with a 95% "
        "Student-t interval; W/T/L: cells where that interval lies above / includes / lies below 0",
        "- models: " + "; ".join(f"`{m}` {FAMILIES.get(m, '')}" for m in args.models),
        "",
        "## Overall (every regime x model is one cell)",
        "",
        render.leaderboard_markdown(whole, REFERENCE),
        "",
        "![rank of every scheme in every cell](leaderboard.png)",
        "",
    ]
    for label, res in parts.items():
        lines += [f"## {label}", "", render.markdown(res, plot_file=None), ""]
    if verdicts is not None:
        lines += confirmation_section(verdicts, args)
    return "\n".join(lines)


def strongest_alternative(whole, model: str) -> str:
    """The screening's best scheme on ``model`` (mean rank over its regimes) that is not the offline path."""
    from ghn_init.harness import Results

    part = Results(whole.config, [r for r in whole.runs if r.model == model], [])
    return next(r["scheme"] for r in part.leaderboard(REFERENCE) if r["scheme"] not in OFFLINE_PATH)


def finalists(alternative: str) -> tuple[str, ...]:
    """What the confirmation runs on a model: the reference, the strongest alternative, the offline path."""
    return tuple(dict.fromkeys((REFERENCE, alternative, *OFFLINE_PATH)))


def confirm(confirmation, picks: dict[str, str]) -> dict[str, dict]:
    """Per model, on the confirmation runs: each offline scheme against the model's strongest alternative, per
    regime (paired differences of final test accuracy, mean and 95% interval, in points), and what to use."""
    from ghn_init.harness import stats

    def accuracy(model: str, scheme: str, data: str) -> float:
        runs = confirmation.select(model, scheme, data)
        return sum(stats.final_acc(r) for r in runs) / len(runs) * 100

    out = {}
    for model, alternative in picks.items():
        against = {(r["data"], r["scheme"]): r for r in confirmation.paired(alternative)
                   if r["model"] == model and r["verdict"] != "n/a"}  # fmt: skip
        per_regime = {}
        for data in confirmation.datasets:
            if not confirmation.select(model, alternative, data):
                continue
            cell = {"alternative": accuracy(model, alternative, data)}
            for scheme in (*OFFLINE_PATH, REFERENCE):
                row = against.get((data, scheme))
                if row is not None:
                    mean, low, high = (row[k] * 100 for k in ("mean", "low", "high"))
                    cell[scheme] = {"acc": accuracy(model, scheme, data), "mean": mean, "low": low, "high": high,
                                    "level": high >= 0}  # fmt: skip
            per_regime[data] = cell
        level = {s: bool(per_regime) and all(c.get(s, {}).get("level", False) for c in per_regime.values())
                 for s in OFFLINE_PATH}  # fmt: skip
        chosen = next((s for s in OFFLINE_PATH if level[s]), None)
        if chosen == OFFLINE_PATH[0]:
            use = "`apply(model)`"
        elif chosen == OFFLINE_PATH[1]:
            use = "`apply(model, data=...)` (`ghn:bundled+calibrate`)"
        else:
            use = f"`{alternative}`"
        if chosen:  # "level" with a wide interval means "not separable", not "as good": say how wide
            widest = max((c[chosen]["high"] - c[chosen]["low"]) / 2 for c in per_regime.values())
            if widest > WIDE_INTERVAL:
                use += f" (level only within intervals up to ±{widest:.0f} points: not separable from `{alternative}`)"
        out[model] = {"alternative": alternative, "regimes": per_regime, "use": use}
    return out


def _delta(entry: dict | None) -> str:
    if not entry:
        return "-"
    return f"{entry['mean']:+.1f} [{entry['low']:+.1f}, {entry['high']:+.1f}]"


def confirmation_section(verdicts: dict[str, dict], args) -> list[str]:
    seeds = ", ".join(map(str, args.confirm_seeds))
    lines = [
        f"## Confirmation (seeds {seeds})",
        "",
        "Chosen on the screening seeds above, then run again on seeds no choice has seen: per model, the strongest "
        "alternative (the best scheme by mean rank that is not the offline path), `default` and the offline path "
        "(`ghn:bundled` = `apply(model)`, `ghn:bundled+calibrate` = `apply(model, data=...)`). Δ: final test "
        "accuracy minus the alternative's on the same seed, in points, mean and 95% Student-t interval. The README's "
        "\"use\" column is read from this table only: the offline path where its interval includes 0 or lies above "
        "it in every regime, else the alternative. New seeds, not new data: the same three regimes as the screening, "
        "on which the bundled GHN's post-processing (`dcbalance`, `detile`) was also chosen (digits, drawn shapes).",
        "",
        "| model | regime | strongest alternative | its accuracy | `ghn:bundled` | Δ | `ghn:bundled+calibrate` | Δ | "
        "`default` | Δ | use |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | --- | ---: | --- | --- |",
    ]
    for model, v in verdicts.items():
        for data, cell in v["regimes"].items():
            accs = [f"{cell[s]['acc']:.1f}" if s in cell else "-" for s in (*OFFLINE_PATH, REFERENCE)]
            lines.append(
                f"| `{model}` | {data} | `{v['alternative']}` | {cell['alternative']:.1f} | {accs[0]} | "
                f"{_delta(cell.get(OFFLINE_PATH[0]))} | {accs[1]} | {_delta(cell.get(OFFLINE_PATH[1]))} | "
                f"{accs[2] if v['alternative'] != REFERENCE else '(the alternative)'} | "
                f"{_delta(cell.get(REFERENCE)) if v['alternative'] != REFERENCE else '-'} | {v['use']} |"
            )
    return lines + [""]


README_START = "<!-- which-init:start (generated by benchmarks/leaderboard.py; do not edit by hand) -->"
README_END = "<!-- which-init:end -->"
OFFLINE_PATH = ("ghn:bundled", "ghn:bundled+calibrate")  # apply(model), apply(model, data=...)
WIDE_INTERVAL = 10.0  # points: a confirmation interval wider than +-this is flagged next to its "use"


def which_init(whole, args, verdicts: dict[str, dict] | None = None) -> str:
    """The README's recommendation, per model family, from the kept runs: the best scheme by mean rank over the
    family's regimes, the schemes level with the best in every regime (paired 95% interval against the best
    includes 0), and where the recommended offline path stands; with ``verdicts`` (:func:`confirm`), what the
    confirmation seeds say to use."""
    from ghn_init.harness import Results

    if verdicts is not None:
        return _which_init_confirmed(whole, args, verdicts)
    seeds = ", ".join(map(str, args.seeds))
    status = "the full table" if args.full else "a **partial** table (not every regime, model or seed has run yet)"
    confirmed = set(args.seeds) <= set(CONFIRMATION_SEEDS) and args.full
    lead = "use" if confirmed else "leads on these runs (not a recommendation until confirmed)"
    lines = [
        f"From `docs/leaderboard.md`: {status}; {args.steps} steps, seeds {seeds}, reference `{REFERENCE}`. "
        "Per model family: the best scheme by mean rank over the regimes, the schemes first or level with the "
        "best (paired 95% interval includes 0) in every regime, and the offline path (`apply(model)` = "
        "`ghn:bundled`; with `data=`: `ghn:bundled+calibrate`).",
        "",
        "| family (model) | regimes | best | first or level everywhere | `ghn:bundled` first or level | "
        f"`+calibrate` first or level | {lead} |",
        "| --- | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for model in whole.models:
        part = Results(whole.config, [r for r in whole.runs if r.model == model], [])
        rows = part.leaderboard(REFERENCE)
        cells = max(r["cells"] for r in rows)
        level = [r["scheme"] for r in rows if r["cells"] == cells and r["first_or_level"] == cells]
        standing = {r["scheme"]: f"{r['first_or_level']}/{r['cells']}" for r in rows if r["scheme"] in OFFLINE_PATH}
        ok = [s for s in OFFLINE_PATH if s in level]
        use = f"`apply(model)` ({', '.join(f'`{s}`' for s in ok)})" if ok else f"`{rows[0]['scheme']}`"
        lines.append(
            f"| {FAMILIES.get(model, model).split(' (')[0]} (`{model}`) | {cells} | `{rows[0]['scheme']}` | "
            f"{', '.join(f'`{s}`' for s in level) or '-'} | {standing.get(OFFLINE_PATH[0], '-')} | "
            f"{standing.get(OFFLINE_PATH[1], '-')} | {use} |"
        )
    return "\n".join(lines)


def _which_init_confirmed(whole, args, verdicts: dict[str, dict]) -> str:
    from ghn_init.harness import Results

    lines = [
        f"From `docs/leaderboard.md`: every scheme on seeds {', '.join(map(str, args.seeds))} (screening), then per "
        "model the strongest alternative (the screening's best scheme that is not the offline path), `default` and "
        f"the offline path again on seeds {', '.join(map(str, args.confirm_seeds))} (confirmation; nothing was chosen "
        f"on them); {args.steps} steps. Δ: the offline path's final test accuracy minus the alternative's, points, "
        "mean [95% interval] per regime on the confirmation seeds. \"Use\" is the offline path where every "
        "interval includes 0 or lies above it, else the alternative.",
        "",
        "| family (model) | screening: best | strongest alternative | `apply(model)` (`ghn:bundled`) Δ | "
        "`apply(model, data=...)` (`+calibrate`) Δ | use |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for model in whole.models:
        part = Results(whole.config, [r for r in whole.runs if r.model == model], [])
        best = part.leaderboard(REFERENCE)[0]["scheme"]
        v = verdicts[model]
        cells = {s: "; ".join(f"{d}: {_delta(c.get(s))}" for d, c in v["regimes"].items()) for s in OFFLINE_PATH}
        lines.append(
            f"| {FAMILIES.get(model, model).split(' (')[0]} (`{model}`) | `{best}` | `{v['alternative']}` | "
            f"{cells[OFFLINE_PATH[0]]} | {cells[OFFLINE_PATH[1]]} | {v['use']} |"
        )
    return "\n".join(lines)


def write_runs_csv(tables: list, path: Path) -> None:
    """One line per kept run (regime, model, scheme, seed, steps, final test accuracy, seconds) and per scheme that
    did not apply: the data behind the page, small enough to keep next to it (the full runs, with curves and
    reports, stay in ``benchmarks/results/leaderboard/jobs/``)."""
    import csv

    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["regime", "model", "scheme", "seed", "steps", "test_acc", "seconds", "not_applicable"])
        runs = [r for t in tables for r in t.runs]
        for r in sorted(runs, key=lambda r: (r.data, r.model, r.scheme, r.seed)):
            out.writerow(
                [r.data, r.model, r.scheme, r.seed, r.steps[-1], f"{r.test_acc[-1]:.6f}", f"{r.seconds:.1f}", ""]
            )
        for x in (f for t in tables for f in t.failed):
            out.writerow([x.data, x.model, x.scheme, x.seed, "", "", "", x.error])


def update_readme(block: str, readme: Path = REPO / "README.md") -> None:
    """Replace the text between the README's which-init markers with ``block``."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme} has no which-init markers ({README_START} ... {README_END})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{block}\n{README_END}{tail}")


def _jobs(args, keys, regimes, seeds, inits_of) -> list[tuple]:
    """The (regime, model, seed) jobs whose kept runs lack some of ``inits_of(model)``."""
    jobs = []
    for key, (data, k, _) in zip(keys, regimes, strict=True):
        for m in args.models:
            for seed in seeds:
                path = _job_file(args.raw, key, m, args.steps, seed)
                missing = [i for i in inits_of(m) if i not in _schemes_in(_kept(path))]
                if missing:
                    jobs.append((m, data, k, tuple(missing), args.steps, seed, str(path)))
    return jobs


def _run(jobs: list[tuple], processes: int) -> None:
    print(f"{len(jobs)} jobs to run ({sum(len(j[3]) for j in jobs)} runs)", flush=True)
    if jobs:
        with mp.get_context("spawn").Pool(processes) as pool:
            for _ in pool.imap_unordered(_run_one, jobs, chunksize=1):
                pass


def _gather(args, keys, regimes, seeds, inits_of) -> tuple[dict, int]:
    """The kept runs of ``inits_of(model)`` on ``seeds``, per regime label, and how many of them are missing."""
    from ghn_init import CompareResults
    from ghn_init.harness import Results

    parts, missing = {}, 0
    for key, (_data, _k, label) in zip(keys, regimes, strict=True):
        kept = [_kept(_job_file(args.raw, key, m, args.steps, seed)) for m in args.models for seed in seeds]
        kept = [part for part in kept if part]
        wanted = {(m, i) for m in args.models for i in inits_of(m)}
        expected = len(wanted) * len(seeds)
        if not kept:
            missing += expected
            continue
        merged = CompareResults.merge(kept)
        merged = Results(
            {**merged.config, "reference": REFERENCE},
            [r for r in merged.runs if (r.model, r.scheme) in wanted and r.seed in seeds],
            [f for f in merged.failed if (f.model, f.scheme) in wanted and f.seed in seeds],
        )
        gap = expected - len(merged.runs) - len(merged.failed)
        if gap:
            print(f"{label}: {gap} (model, scheme, seed) runs are not kept yet; the page shows what is", flush=True)
        missing += gap
        parts[label] = merged
    return parts, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny configuration that proves the command")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run (short: separates schemes)")
    parser.add_argument("--seeds", default=",".join(map(str, SCREENING_SEEDS)), help="screening seeds")
    parser.add_argument("--confirm-seeds", default=",".join(map(str, CONFIRMATION_SEEDS)),
                        help="confirmation seeds ('' to skip the confirmation)")  # fmt: skip
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--inits", default=None, help="default: every registered scheme")
    parser.add_argument("--regimes", default=",".join(REGIMES), help=f"some of {', '.join(REGIMES)}")
    parser.add_argument("--jobs", type=int, default=1, help="(regime, model) pairs run in parallel, 1 thread each")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "leaderboard.md")
    parser.add_argument("--raw", type=Path, default=REPO / "benchmarks" / "results" / "leaderboard")
    parser.add_argument("--refresh", default="", help="comma-separated scheme patterns whose kept runs are dropped")
    parser.add_argument("--collect", action="store_true", help="run nothing: rebuild the page from the kept runs")
    parser.add_argument("--no-readme", dest="readme", action="store_false", help="leave the README's section alone")
    argv = __import__("sys").argv[1:]
    args = parser.parse_args(argv)
    args.argv = argv
    args.models = tuple(m for m in args.models.split(",") if m)
    args.seeds = tuple(int(s) for s in args.seeds.split(","))
    args.confirm_seeds = tuple(int(s) for s in args.confirm_seeds.split(",") if s.strip())
    inits = tuple(args.inits.split(",")) if args.inits else tuple(all_schemes())
    keys = [k for k in args.regimes.split(",") if k]
    if args.smoke:
        args.models, inits, keys = SMOKE["models"], SMOKE["inits"], SMOKE["regimes"]
        args.steps, args.seeds, args.confirm_seeds = SMOKE["steps"], SMOKE["seeds"], ()
    unknown = [k for k in keys if k not in REGIMES]
    if unknown:
        parser.error(f"unknown regime {unknown[0]!r}; use some of {', '.join(REGIMES)}")
    overlap = set(args.seeds) & set(args.confirm_seeds)
    if overlap:
        parser.error(f"seeds {sorted(overlap)} are both screening and confirmation seeds; keep them apart")
    regimes = [REGIMES[k] for k in keys]
    args.full = set(keys) == set(REGIMES) and set(args.models) == set(MODELS) and len(args.seeds) >= 5

    if args.refresh:
        _refresh(args.raw, args.refresh.split(","))
    started = time.perf_counter()
    if not args.collect:
        _run(_jobs(args, keys, regimes, args.seeds, lambda m: inits), args.jobs)
    parts, missing = _gather(args, keys, regimes, args.seeds, lambda m: inits)
    if not parts:
        parser.error("nothing kept yet for this selection; run without --collect first")
    args.full = args.full and not missing
    whole = combined(parts)
    for label, res in parts.items():
        res.save(args.raw / label.replace(", ", "-").replace("/", "per"), plot=False)

    verdicts, confirmation = None, None
    if args.confirm_seeds and missing:
        print(f"the confirmation waits for the screening table: {missing} runs missing", flush=True)
    elif args.confirm_seeds:
        picks = {m: strongest_alternative(whole, m) for m in args.models}
        print("confirming: " + ", ".join(f"{m} against {a}" for m, a in picks.items()), flush=True)
        if not args.collect:
            _run(_jobs(args, keys, regimes, args.confirm_seeds, lambda m: finalists(picks[m])), args.jobs)
        checks, gap = _gather(args, keys, regimes, args.confirm_seeds, lambda m: finalists(picks[m]))
        if gap:
            print(f"the confirmation is incomplete ({gap} runs missing): the README keeps the screening's table")
        else:
            confirmation = combined(checks)
            verdicts = confirm(confirmation, picks)
    seconds = time.perf_counter() - started
    text = page(parts, whole, args, seconds, verdicts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    try:
        from ghn_init.harness import render

        render.plot_ranks(whole, args.out.with_suffix(".png"), REFERENCE)
    except ImportError:
        pass
    (args.raw / "leaderboard.json").write_text(json.dumps(whole.leaderboard(REFERENCE), indent=1))
    write_runs_csv([whole] + ([confirmation] if confirmation else []), args.out.with_name(args.out.stem + "_runs.csv"))
    print(text)
    if args.readme and not args.smoke:
        update_readme(which_init(whole, args, verdicts))
        print("updated the README's which-init section")


if __name__ == "__main__":
    main()
