"""Pure transformations of the splitting stage: leakage-free splits and production sets.

DataFrame in, DataFrame out: no Dagster and no storage here, so the same functions serve the
assets, the tests, the dashboard and the benchmarks. Which rows must stay together is decided in
:mod:`medqa_assets.splitting.leakage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medqa_assets.splitting.leakage import (
    BLOCKING_KINDS,
    GroupingRule,
    LeakageGroups,
    held_out_sharing,
    hub_keys,
    leakage_groups,
    leakage_keys,
)
from medqa_assets.storage.layout import SPLIT_NAMES, production_set_name

SPLIT_RATIOS: dict[str, float] = {"training": 0.6, "validation": 0.2, "evaluation": 0.2}
SPLIT_SALT = "medqa-split-v1"
PRODUCTION_SET_SALT = "medqa-production-set-v1"


class SplitRatioError(ValueError):
    """The rows that must go to training already exceed the training ratio."""


def _unit_interval(keys: pd.Series, salt: str) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per key."""
    hashes = pd.util.hash_array(("" + salt + "\x1f" + keys.astype(str)).to_numpy(dtype=object), categorize=True)
    return hashes.astype(np.float64) / np.float64(2**64)


@dataclass
class SplitResult:
    """The splits, the groups they were cut along, and the thresholds the free groups were cut by."""

    splits: dict[str, pd.DataFrame]
    groups: LeakageGroups
    free_ratios: dict[str, float] = field(default_factory=dict)
    split_of_row: np.ndarray = field(default_factory=lambda: np.array([]))
    thresholds: list[float] = field(default_factory=list)

    def sharing(self) -> dict[str, dict]:
        """Held-out rows sharing a key with training (see :func:`held_out_sharing`)."""
        return held_out_sharing(self.groups.keys, self.groups.hubs, self.split_of_row)


def rebalanced_ratios(ratios: dict[str, float], forced_training: float) -> dict[str, float]:
    """The ratios the free groups are cut by when a fraction of the rows must go to training
    (rounded to 3 decimals: they are recorded in the metadata)."""
    if forced_training >= ratios["training"]:
        raise SplitRatioError(
            f"{forced_training:.1%} of the rows are in groups that must go to training (a hub answer, or too big "
            "to hold out), "
            f"more than the training ratio {ratios['training']:.0%}: raise dataset_split's answer_hub_foci or "
            "max_held_out_group_share config"
        )
    free = 1.0 - forced_training
    held_out = {name: round(ratios[name] / free, 3) for name in SPLIT_NAMES if name != "training"}
    return {"training": round(1.0 - sum(held_out.values()), 3), **held_out}


def split_dataset(
    clean: pd.DataFrame,
    ratios: dict[str, float] | None = None,
    groups: LeakageGroups | None = None,
    rule: GroupingRule | None = None,
) -> SplitResult:
    """Training/validation/evaluation by a hash of the leakage group: stable and leakage-free.

    Groups holding a hub answer go to training; the others fall into a split by the hash of
    their label, with thresholds rebalanced so that the whole still meets ``ratios``.
    """
    ratios = ratios or SPLIT_RATIOS
    groups = leakage_groups(clean, rule) if groups is None else groups
    forced = groups.to_training.to_numpy()
    free_ratios = rebalanced_ratios(ratios, float(forced.mean()) if len(forced) else 0.0)
    position = _unit_interval(groups.labels, SPLIT_SALT)
    thresholds = _row_weighted_thresholds(position[~forced], free_ratios)
    bucket = np.searchsorted(thresholds, position, side="right").clip(max=len(SPLIT_NAMES) - 1)
    bucket[forced] = SPLIT_NAMES.index("training")
    splits = {name: clean[bucket == index].reset_index(drop=True) for index, name in enumerate(SPLIT_NAMES)}
    split_of_row = np.asarray(SPLIT_NAMES, dtype=object)[bucket]
    return SplitResult(splits, groups, free_ratios, split_of_row, [round(float(t), 6) for t in thresholds[:-1]])


def _row_weighted_thresholds(positions: np.ndarray, ratios: dict[str, float]) -> np.ndarray:
    """Cut points on the hash line such that the rows (not the groups) fall in ``ratios``.

    Every row of a group has the group's position, so the cut points are quantiles of the rows'
    positions; a cut falls halfway between two neighbouring groups. Fixed cut points would leave
    the ratios to chance: with groups of up to 1% of the rows, that chance is several points.
    """
    targets = np.cumsum([ratios[name] for name in SPLIT_NAMES])[:-1]
    ordered = np.sort(positions)
    if len(ordered) < 2:  # nothing to place between
        return np.append(targets, 1.0)
    index = np.clip(np.round(targets * len(ordered)).astype(int), 1, len(ordered) - 1)
    return np.append((ordered[index - 1] + ordered[index]) / 2, 1.0)


def cut_production_sets(evaluation: pd.DataFrame, count: int) -> dict[str, pd.DataFrame]:
    """The evaluation split cut into ``count`` disjoint sets that together equal it (by row hash)."""
    if count < 1:
        raise ValueError("the number of production sets must be at least 1")
    position = _unit_interval(evaluation["row_id"], PRODUCTION_SET_SALT)
    number = np.minimum((position * count).astype(int), count - 1)
    return {production_set_name(i + 1): evaluation[number == i].reset_index(drop=True) for i in range(count)}


# -- checks (pure: they return findings, the Dagster layer turns them into check results) -----


def cross_split_leakage(splits: dict[str, pd.DataFrame], rule: GroupingRule | None = None) -> dict[str, int]:
    """Held-out rows sharing a question, folded focus, document or non-hub answer with training,
    from split frames as stored (the dashboard's view of the blocking check)."""
    frames = [frame.assign(_split=name) for name, frame in splits.items() if len(frame)]
    if not frames:
        return dict.fromkeys(BLOCKING_KINDS, 0)
    rows = pd.concat(frames, ignore_index=True)
    keys = leakage_keys(rows)
    return held_out_sharing(keys, hub_keys(keys, rule or GroupingRule()), rows["_split"].to_numpy())["blocking"]


def split_ratio_tolerance(result: SplitResult) -> float:
    """How far a split may stray from its target: whole groups fall into a split together, so
    the expected spread of a split's share is sqrt(p(1-p) * sum of squared free group sizes) / rows;
    allow three standard deviations, at least 2 points."""
    rows = len(result.groups.labels)
    free_sizes = result.groups.labels[~result.groups.to_training].value_counts().to_numpy(dtype=np.float64)
    spread = math.sqrt(float((free_sizes**2).sum())) / max(rows, 1)
    widest = max(math.sqrt(p * (1 - p)) * spread for p in result.free_ratios.values())
    return max(0.02, 3 * widest)


def split_ratio_deviation(counts: dict[str, int], ratios: dict[str, float] | None = None) -> dict[str, float]:
    """Observed fraction minus target fraction, per split."""
    ratios = ratios or SPLIT_RATIOS
    total = sum(counts.values()) or 1
    return {name: round(counts[name] / total - ratios[name], 4) for name in ratios}


def production_sets_coverage(evaluation: pd.DataFrame, sets: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Rows of the evaluation split missing from the sets, rows in several sets, rows not from it."""
    evaluation_ids = set(evaluation["row_id"])
    counts = pd.concat([s["row_id"] for s in sets.values()], ignore_index=True).value_counts()
    in_sets = set(counts.index)
    return {
        "missing": len(evaluation_ids - in_sets),
        "in_several_sets": int((counts > 1).sum()),
        "not_in_evaluation": len(in_sets - evaluation_ids),
    }
