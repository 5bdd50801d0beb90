"""Statistics of a measurement repeated over seeds: mean ± sample std, and the paired difference of
two methods run at the same seeds with its t-interval. Pure functions of lists of numbers, used by
the bench's tables and the report's figure alike (the report is imported by the bench, so they live
in neither)."""

import math
import statistics

from scipy import stats


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1: the seeds are a sample of the seeds one could
    have run); no std for a single value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def paired_difference(a: list[float], b: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a - b, pair by pair, with its two-sided `confidence` t-interval. Pairing
    runs of the same seed removes what the seed does to both (the same data order and augmentations),
    so that smaller differences stand out of the noise than between unpaired means. Needs two pairs
    or more."""
    mean, std = mean_std([x - y for x, y in zip(a, b, strict=True)])
    half_width = float(stats.t.ppf((1 + confidence) / 2, len(a) - 1)) * std / math.sqrt(len(a))
    return mean, mean - half_width, mean + half_width
