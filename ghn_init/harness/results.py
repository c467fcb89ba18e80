"""What :func:`ghn_init.compare` measured: :class:`Run`, :class:`Failure` and :class:`Results` (results.json)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from . import render, stats

__all__ = ["Run", "Failure", "Results", "RECIPE_KEYS"]

# config entries that define how runs were fine-tuned and tested: results only merge when these agree
RECIPE_KEYS = (
    "data",
    "steps",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "batch_size",
    "image_size",
    "num_classes",
    "eval_at",
    "recalibrate_bn",
    "calibration_images",
    "loss_window",
    "per_class",
)
# config entries that list what was run: merging takes their union, in order of appearance
_UNION_KEYS = ("models", "inits", "seeds")


@dataclass
class Run:
    """One model fine-tuned from one scheme with one seed (on one dataset)."""

    model: str
    scheme: str
    seed: int
    steps: list[int]  # checkpoints
    test_acc: list[float]  # at each checkpoint; the last one is the end of training
    train_loss: list[float]  # mean over the loss window before each checkpoint (step 0: step-0 loss)
    step0_loss: float  # loss of the first batch before any update
    loss_curve: list[float]  # every step
    seconds: float  # wall time: building, initializing, training and evaluating
    init_seconds: float  # of which the init scheme
    report: Optional[dict] = None  # what the scheme reported (SchemeReport or ghn_init Report as a dict)
    data: str = ""  # the dataset's name (several datasets in one comparison)


@dataclass
class Failure:
    """A scheme that could not initialize a model (e.g. ``mimetic`` on a CNN): that run only, with the reason."""

    model: str
    scheme: str
    seed: int
    error: str  # one line: the error's type and message
    data: str = ""


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


@dataclass
class Results:
    """Everything :func:`compare` measured; ``save`` writes results.json, results.md and the plots."""

    config: dict
    runs: list[Run] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def select(
        self, model: Optional[str] = None, scheme: Optional[str] = None, data: Optional[str] = None
    ) -> list[Run]:
        return [
            r
            for r in self.runs
            if (model is None or r.model == model)
            and (scheme is None or r.scheme == scheme)
            and (data is None or r.data == data)
        ]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.runs))

    @property
    def schemes(self) -> list[str]:
        return list(dict.fromkeys([r.scheme for r in self.runs] + [f.scheme for f in self.failed]))

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.data for r in self.runs))

    def summary(self) -> list[dict[str, Any]]:
        """Per dataset, model and scheme: mean and sample standard deviation over seeds of every metric."""
        rows = []
        for d in self.datasets:
            for m in self.models:
                for s in self.schemes:
                    runs = self.select(m, s, d)
                    if not runs:
                        continue
                    n = len(runs[0].steps)
                    row: dict[str, Any] = {
                        "data": d,
                        "model": m,
                        "scheme": s,
                        "seeds": [r.seed for r in runs],
                        "steps": runs[0].steps,
                    }
                    row["test_acc"] = [_mean_sd([r.test_acc[i] for r in runs]) for i in range(n)]
                    row["train_loss"] = [_mean_sd([r.train_loss[i] for r in runs]) for i in range(n)]
                    row["step0_loss"] = _mean_sd([r.step0_loss for r in runs])
                    row["seconds"] = _mean_sd([r.seconds for r in runs])
                    rows.append(row)
        return rows

    def paired(self, reference: str) -> list[dict[str, Any]]:
        """Every scheme against ``reference`` per dataset and model, paired by seed (:func:`stats.paired`)."""
        return stats.paired(self, reference)

    def leaderboard(self, reference: Optional[str] = None) -> list[dict[str, Any]]:
        """Schemes by mean rank over datasets x models (:func:`stats.leaderboard`)."""
        return stats.leaderboard(self, reference)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"config": self.config, "summary": self.summary(), "runs": [asdict(r) for r in self.runs]}
        d["failed"] = [asdict(f) for f in self.failed]
        reference = self.config.get("reference")
        if reference:
            d["paired"] = self.paired(reference)
            d["leaderboard"] = self.leaderboard(reference)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Results:
        return cls(dict(d["config"]), [Run(**r) for r in d["runs"]], [Failure(**f) for f in d.get("failed", [])])

    @classmethod
    def merge(cls, parts: Iterable[Union[Results, Mapping[str, Any]]]) -> Results:
        """Join the results of :func:`compare` calls that split models, schemes or seeds between processes.

        Args:
            parts: :class:`Results` (or their ``to_dict()``) of runs with the same recipe: every ``config``
                entry in :data:`RECIPE_KEYS` must agree, or the table would compare unequal fine-tuning.

        Returns:
            One :class:`Results`: the first part's config, its models, schemes and seeds the union of every
            part's, and all runs (and failures) in order.

        Raises:
            ValueError: no parts, or two parts ran different recipes (the message names the entry).

        Example:
            >>> with multiprocessing.Pool(2) as pool:  # doctest: +SKIP
            ...     parts = pool.map(run_one_model, ["resnet18", "small_vit"])  # each returns compare(...).to_dict()
            >>> Results.merge(parts).save("out")  # doctest: +SKIP
        """
        loaded = [p if isinstance(p, Results) else cls.from_dict(p) for p in parts]
        if not loaded:
            raise ValueError("no results to merge")
        first = loaded[0]
        merged = cls(dict(first.config), list(first.runs), list(first.failed))
        for part in loaded[1:]:
            for key in RECIPE_KEYS:
                if part.config.get(key) != first.config.get(key):
                    raise ValueError(
                        f"cannot merge results run with different {key!r}: "
                        f"{first.config.get(key)!r} vs {part.config.get(key)!r}; rerun them with one recipe"
                    )
            merged.runs += part.runs
            merged.failed += part.failed
        for key in _UNION_KEYS:
            merged.config[key] = list(dict.fromkeys(v for p in loaded for v in p.config.get(key, [])))
        return merged

    def markdown(self, plot: Optional[str] = "curves.png") -> str:
        """The setup, the mean ± sd table, failures and (with a reference) the paired table and leaderboard."""
        return render.markdown(self, plot)

    def save(self, out: Union[str, os.PathLike[str]], plot: bool = True) -> dict[str, str]:
        """Write ``results.json``, ``results.md`` and (with matplotlib) ``curves.png`` and ``ranks.png``."""
        return render.save(self, out, plot)
