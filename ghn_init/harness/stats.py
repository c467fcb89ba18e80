"""Paired statistics and the leaderboard of a comparison: every scheme against a reference, seed by seed.

Runs of one dataset, model and seed share their data order and every tensor a scheme leaves alone, so the
difference of two schemes' final test accuracies on one seed is a paired sample: its mean over seeds, with a 95%
Student-t interval, says whether a scheme is better (win: the interval lies above 0), worse (loss) or not
distinguishable (tie) on that dataset and model. Takes any object with ``runs``, ``datasets``, ``models`` and
``schemes`` (a :class:`~ghn_init.harness.results.Results`); imports nothing from the harness.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

__all__ = ["t_quantile", "interval", "paired", "leaderboard", "final_acc"]

# two-sided 95% quantiles of Student's t, degrees of freedom 1..30
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (a table to 30, then ``1.96 + 2.5/df``,
    within 0.002 of the exact value)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.5 / df


def interval(diffs: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of paired differences and its 95% t-interval (nan bounds for one value)."""
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def final_acc(run: Any) -> float:
    """A run's test accuracy at the end of training; a diverged run (nan) counts as 0."""
    acc = run.test_acc[-1]
    return acc if math.isfinite(acc) else 0.0


def _by_seed(results: Any, data: str, model: str, scheme: str) -> dict[int, float]:
    return {r.seed: final_acc(r) for r in results.runs if r.data == data and r.model == model and r.scheme == scheme}


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return "win"
    if high < 0:
        return "loss"
    return "tie"


def paired(results: Any, reference: str) -> list[dict[str, Any]]:
    """Per dataset, model and scheme (not ``reference``): the paired difference of final test accuracy to
    ``reference`` over the seeds both ran.

    Returns:
        Rows ``{data, model, scheme, seeds, mean, low, high, verdict}`` (accuracy differences as fractions;
        ``verdict`` is ``win``/``tie``/``loss``, or ``n/a`` with fewer than two seeds).
    """
    rows = []
    for data in results.datasets:
        for model in results.models:
            ref = _by_seed(results, data, model, reference)
            if not ref:
                continue
            for scheme in results.schemes:
                if scheme == reference:
                    continue
                mine = _by_seed(results, data, model, scheme)
                seeds = sorted(set(mine) & set(ref))
                if not seeds:
                    continue
                mean, low, high = interval([mine[s] - ref[s] for s in seeds])
                verdict = _verdict(low, high) if len(seeds) > 1 else "n/a"
                rows.append(
                    {"data": data, "model": model, "scheme": scheme, "seeds": seeds, "mean": mean, "low": low,
                     "high": high, "verdict": verdict}
                )  # fmt: skip
    return rows


def _ranks(means: dict[str, float]) -> dict[str, float]:
    """1 = highest mean; tied schemes share the average of their ranks."""
    ordered = sorted(means, key=lambda s: -means[s])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and means[ordered[j + 1]] == means[ordered[i]]:
            j += 1
        for s in ordered[i : j + 1]:
            ranks[s] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def leaderboard(results: Any, reference: Optional[str] = None) -> list[dict[str, Any]]:
    """Schemes ordered by their mean rank over the cells (dataset x model) they ran in.

    Per scheme: ``mean_rank``; ``cells`` (ran) and ``failed`` (cells where it did not apply); ``mean_acc`` (mean
    final accuracy over its cells); ``first_or_level``: cells where it is the best scheme or its paired 95% interval
    against the best includes 0; and with a ``reference``: ``wins``/``ties``/``losses`` against it and the mean
    difference to it over cells.

    Returns:
        Rows sorted by ``mean_rank`` (best first); each also has ``ranks``: ``{"data/model": rank}``.
    """
    cells = [(d, m) for d in results.datasets for m in results.models]
    per_scheme: dict[str, dict[str, Any]] = {
        s: {"scheme": s, "ranks": {}, "accs": [], "first_or_level": 0, "failed": 0} for s in results.schemes
    }
    for f in getattr(results, "failed", []):
        per_scheme[f.scheme]["failed_cells"] = per_scheme[f.scheme].get("failed_cells", set()) | {(f.data, f.model)}
    for data, model in cells:
        by_scheme = {s: _by_seed(results, data, model, s) for s in results.schemes}
        means = {s: sum(v.values()) / len(v) for s, v in by_scheme.items() if v}
        if not means:
            continue
        best = max(means, key=lambda s: means[s])
        for s, rank in _ranks(means).items():
            row = per_scheme[s]
            row["ranks"][f"{data}/{model}"] = rank
            row["accs"].append(means[s])
            seeds = sorted(set(by_scheme[s]) & set(by_scheme[best]))
            if s == best:
                row["first_or_level"] += 1
            elif len(seeds) > 1:
                _, low, high = interval([by_scheme[s][k] - by_scheme[best][k] for k in seeds])
                row["first_or_level"] += int(high >= 0)
    if reference:
        for r in paired(results, reference):
            row = per_scheme[r["scheme"]]
            key = {"win": "wins", "tie": "ties", "loss": "losses"}.get(r["verdict"])
            if key:
                row[key] = row.get(key, 0) + 1
            row.setdefault("diffs", []).append(r["mean"])
    out = []
    for s, row in per_scheme.items():
        ranks = row["ranks"]
        entry = {
            "scheme": s,
            "mean_rank": sum(ranks.values()) / len(ranks) if ranks else math.nan,
            "cells": len(ranks),
            "failed": len(row.get("failed_cells", ())),
            "mean_acc": sum(row["accs"]) / len(row["accs"]) if row["accs"] else math.nan,
            "first_or_level": row["first_or_level"],
            "ranks": ranks,
        }
        if reference:
            entry.update({k: row.get(k, 0) for k in ("wins", "ties", "losses")})
            diffs = row.get("diffs", [])
            entry["mean_diff"] = sum(diffs) / len(diffs) if diffs else (0.0 if s == reference else math.nan)
        out.append(entry)
    return sorted(out, key=lambda e: (math.isnan(e["mean_rank"]), e["mean_rank"]))
