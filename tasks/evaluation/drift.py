"""Drift tests of monitor_llm, each a DriftTest: query embeddings (an MMD permutation test with a p-value), length and
language shift (PSI), and the served answers (length by KS; refusal, toxicity and citation rates by Fisher's exact test).

Which part is a library's and which is ours:
- embedding_drift: the permutation test is scipy's `permutation_test` (resampling with a seeded Generator, p-value with
  the +1 correction) and the distances sklearn's; ours is the unbiased MMD^2 statistic on the pooled RBF kernel, a
  few lines. Evidently 0.7 has embedding drift methods but none gives a p-value from a permutation test:
  `MMDDriftMethod` compares MMD^2 with a fixed cut-off, or with a bootstrap over the reference alone (seeded through
  the global `np.random.seed`); its classifier method compares one split's ROC AUC with a cut-off or with the AUCs
  of random scores; its `empirical_mmd` stat test takes one column (its distance formula only broadcasts for one
  dimension), with 100 unseeded permutations. bench/drift.py measures Evidently's two beside ours.
- psi: ours (numpy). Evidently's `psi` stat test bins numbers on Sturges edges of the pooled sample and ignores
  the bin count, so its value moves with the current window's size and range; ours bins on reference quantiles.
  On categories both compute the same sum (tests/tasks/evaluation/test_drift.py checks ours against Evidently's).
- output_drift: scipy's `ks_2samp` and `fisher_exact`; the refusal heuristic (REFUSAL) is ours.

A window smaller than `min_window` (default MIN_WINDOW) raises WindowTooSmall: the DAG reports "not enough data".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics.pairwise import euclidean_distances

MIN_WINDOW = 20
PSEUDO_COUNT = 0.5  # added to every PSI bin on both sides, so an empty bin costs a finite amount
OUTPUT_TESTS = ("answer_length", "refusal_rate", "toxicity_rate", "citation_rate")
PERMUTATION_BATCH = 128  # permutations scored per matrix product: bounds memory at batch x window rows
MAX_EMBEDDING_ROWS = 2000  # per window; larger windows are sampled down (seeded), as the kernel matrix grows as N^2

# A refusal: an empty answer, or one of these phrases within the first REFUSAL_HEAD characters (a refusal says so at
# once; a long answer that mentions "cannot answer" in passing is an answer). Lower-cased, straight apostrophes.
REFUSAL_HEAD = 200
REFUSAL = re.compile("|".join((
    r"\bi (?:do not|don't|dont) know\b",
    r"\b(?:i|we) (?:cannot|can't|can not|am unable to|am not able to|are unable to) (?:answer|help|assist|say|tell|find)\b",
    r"\b(?:cannot|can't|unable to|not able to) answer (?:this|that|the|your) question\b",
    r"\b(?:no|not enough|insufficient) (?:relevant )?information (?:to answer|about this|on this|in the "
    r"(?:context|passages?|documents?|sources?))\b",
    r"\b(?:context|passages?|documents?|sources?) (?:does not|doesn't|do not|don't) (?:contain|mention|say|cover|include)\b",
    r"\bi(?:'m| am) (?:sorry|afraid),? but\b",
    r"\bas an ai\b",
)))


@dataclass(frozen=True)
class DriftTest:
    """One test's outcome. p_value is None for a test without one (PSI) or one that could not run (see method)."""

    name: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    method: str


class WindowTooSmall(ValueError):
    """A window with too few records for a test to mean anything: "not enough data", neither drift nor no drift."""

    def __init__(self, test: str, reference: int, current: int, minimum: int) -> None:
        self.test, self.reference, self.current, self.minimum = test, reference, current, minimum
        super().__init__(f"{test}: not enough data: the reference window has {reference} records and the current "
                         f"window {current}; each needs at least {minimum}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.test, self.reference, self.current, self.minimum)


def require_window(test: str, reference: int, current: int, minimum: int = MIN_WINDOW) -> None:
    if minimum < 2:
        raise ValueError(f"{test}: min_window {minimum} must be >= 2")
    if reference < minimum or current < minimum:
        raise WindowTooSmall(test, reference, current, minimum)


def _check_alpha(test: str, alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"{test}: significance level {alpha!r} must be a number in (0, 1)")


# --- input drift: query embeddings ----------------------------------------------------------------------------------
def _embedding_matrix(values: np.ndarray, window: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.size == 0:
        return matrix.reshape(0, 0)
    if matrix.ndim != 2:
        raise ValueError(f"query_embedding: the {window} window must be a 2-d array (rows, dimensions), "
                         f"got shape {matrix.shape}")
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        raise ValueError(f"query_embedding: row {bad[0]} of the {window} window has a NaN or infinite value")
    return matrix


def embedding_drift(reference: np.ndarray, current: np.ndarray, *, alpha: float, permutations: int, seed: int,
                    min_window: int = MIN_WINDOW, max_rows: int = MAX_EMBEDDING_ROWS) -> DriftTest:
    """Two-sample MMD test on query embeddings: drifted when the permutation p-value is <= alpha.

    Statistic: the unbiased MMD^2 (Gretton et al. 2012) with an RBF kernel exp(-|x - y|^2 / median), the median of the
    pooled sample's pairwise squared distances (the median heuristic). Null distribution: `permutations` random
    relabellings of the pooled rows (scipy.stats.permutation_test, seeded), so the same windows and seed always give
    the same p-value; the smallest p-value is 1 / (permutations + 1). Cost: one (permutations x N) by (N x N) matrix
    product, N = both windows' rows; memory a few N^2 floats, so a window of more than `max_rows` rows is replaced by
    a seeded random sample of `max_rows` of them (the method says so).
    """
    test = "query_embedding"
    ref, cur = _embedding_matrix(reference, "reference"), _embedding_matrix(current, "current")
    require_window(test, len(ref), len(cur), min_window)
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"{test}: the reference has {ref.shape[1]}-d vectors and the current window "
                         f"{cur.shape[1]}-d; both must come from the same embedding model")
    _check_alpha(test, alpha)
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 1:
        raise ValueError(f"{test}: permutations {permutations!r} must be an integer >= 1")

    rng = np.random.default_rng(seed)
    sampled = ""
    if len(ref) > max_rows or len(cur) > max_rows:
        sampled = f"; sampled to {min(len(ref), max_rows)} + {min(len(cur), max_rows)} of {len(ref)} + {len(cur)} rows"
        ref, cur = (w[np.sort(rng.choice(len(w), max_rows, replace=False))] if len(w) > max_rows else w
                    for w in (ref, cur))
    m, n = len(ref), len(cur)
    squared = euclidean_distances(np.vstack([ref, cur]), squared=True)
    median = float(np.median(squared[np.triu_indices(m + n, k=1)]))
    kernel = np.exp(-squared / median) if median > 0 else np.ones_like(squared)
    np.fill_diagonal(kernel, 0.0)  # the unbiased statistic leaves out k(x_i, x_i)
    total = kernel.sum()

    def mmd2(x_rows: np.ndarray, y_rows: np.ndarray, axis: int = -1) -> np.ndarray:
        """MMD^2_u of the split (x_rows | the rest), for a batch of splits; y_rows is implied by x_rows."""
        batch = np.atleast_2d(x_rows)
        in_x = np.zeros((len(batch), m + n))
        np.put_along_axis(in_x, batch, 1.0, axis=1)
        from_x = in_x @ kernel
        xx = (from_x * in_x).sum(axis=1)
        xy = from_x.sum(axis=1) - xx
        yy = total - xx - 2 * xy
        value = xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2 * xy / (m * n)
        return value if np.ndim(x_rows) > 1 else value.reshape(())

    result = stats.permutation_test((np.arange(m), np.arange(m, m + n)), mmd2, permutation_type="independent",
                                    vectorized=True, n_resamples=permutations, alternative="greater",
                                    batch=PERMUTATION_BATCH, rng=rng)
    p_value = float(result.pvalue)
    return DriftTest(test, float(result.statistic), p_value, alpha, p_value <= alpha,
                     f"MMD^2 (RBF, median bandwidth; hand-written) + scipy permutation_test, {permutations} "
                     f"permutations, seed {seed}{sampled}")


# --- input drift: PSI on lengths and languages ----------------------------------------------------------------------
def _psi_bins(reference: np.ndarray, current: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin: reference quantile bins (tied quantiles merge), plus one bin below and one above the
    reference's range, so values the reference never had show up however few bins there are."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    low, high = reference.min(), reference.max()
    slots = len(edges) + 3

    def count(values: np.ndarray) -> np.ndarray:
        index = np.searchsorted(edges, values, side="right") + 1
        index[values < low] = 0
        index[values > high] = slots - 1
        return np.bincount(index, minlength=slots)

    return count(reference), count(current)


def _categories(reference: Sequence, current: Sequence) -> tuple[np.ndarray, np.ndarray]:
    ref, cur = Counter(map(str, reference)), Counter(map(str, current))
    keys = sorted(ref.keys() | cur.keys())
    return np.array([ref[k] for k in keys]), np.array([cur[k] for k in keys])


def psi_value(reference_counts: np.ndarray, current_counts: np.ndarray, pseudo_count: float = PSEUDO_COUNT) -> float:
    """sum over bins of (q - p) * ln(q / p), p and q the bin shares with `pseudo_count` added to every bin."""
    k = len(reference_counts)
    p = (reference_counts + pseudo_count) / (reference_counts.sum() + pseudo_count * k)
    q = (current_counts + pseudo_count) / (current_counts.sum() + pseudo_count * k)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(reference: Sequence, current: Sequence, *, threshold: float, categorical: bool = False, bins: int = 10,
        name: str = "psi", min_window: int = MIN_WINDOW, pseudo_count: float = PSEUDO_COUNT) -> DriftTest:
    """Population stability index of the current window against the reference: drifted when PSI >= threshold.

    Numbers (lengths): `bins` reference-quantile bins (fewer where quantiles tie, as integer lengths do) plus a bin
    below and one above the reference's range. Categories (languages): one bin per value seen in either window.
    Every bin gets `pseudo_count` on both sides. Evidently's psi is not used (see the module docstring). PSI has no
    p-value, and same-distribution windows score about (bins - 1) * (1/len(reference) + 1/len(current)) on average,
    so a fixed threshold needs a window size to go with it: bench/drift.py measures which.
    """
    require_window(name, len(reference), len(current), min_window)
    if not (isinstance(threshold, (int, float)) and threshold > 0):
        raise ValueError(f"{name}: PSI threshold {threshold!r} must be a number > 0")
    if categorical:
        ref_counts, cur_counts = _categories(reference, current)
        how = "categorical"
    else:
        if bins < 2:
            raise ValueError(f"{name}: bins {bins} must be >= 2")
        ref, cur = (np.asarray(list(v), dtype=np.float64) for v in (reference, current))
        for window, values in (("reference", ref), ("current", cur)):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise ValueError(f"{name}: value {bad[0]} of the {window} window is {values[bad[0]]}, not a number")
        ref_counts, cur_counts = _psi_bins(ref, cur, bins)
        how = f"{bins} reference-quantile bins"
    value = psi_value(ref_counts, cur_counts, pseudo_count)
    return DriftTest(name, value, None, threshold, value >= threshold,
                     f"PSI (hand-written, numpy), {how}, pseudo-count {pseudo_count}")


# --- output drift ---------------------------------------------------------------------------------------------------
def is_refusal(answer: str) -> bool:
    """Empty, or one of REFUSAL's phrases in the first REFUSAL_HEAD characters (case-insensitive)."""
    head = answer.strip()[:REFUSAL_HEAD].lower().replace("\u2019", "'")
    return not head or REFUSAL.search(head) is not None


@dataclass(frozen=True)
class _Answer:
    words: int
    refusal: bool
    toxic: bool | None
    cited: bool


def _answer(record: Any, index: int, window: str) -> _Answer:
    where = f"output drift: record {index} of the {window} window"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} is a {type(record).__name__}, not a mapping with answer, cited and toxic")
    answer, cited, toxic = record.get("answer"), record.get("cited"), record.get("toxic")
    if not isinstance(answer, str):
        raise ValueError(f"{where}: 'answer' must be a string, got {answer!r}")
    if isinstance(cited, bool) or not isinstance(cited, int) or cited < 0:
        raise ValueError(f"{where}: 'cited' must be an integer >= 0 (passages cited), got {cited!r}")
    if toxic is not None and not isinstance(toxic, bool):
        raise ValueError(f"{where}: 'toxic' must be true, false or null (not scored), got {toxic!r}")
    return _Answer(len(answer.split()), is_refusal(answer), toxic, cited > 0)


def output_alphas(thresholds: Mapping[str, float]) -> dict[str, float]:
    """The significance level of each output test, from the config: every key of OUTPUT_TESTS, nothing else."""
    missing = [k for k in OUTPUT_TESTS if k not in thresholds]
    unknown = sorted(set(thresholds) - set(OUTPUT_TESTS))
    if missing or unknown:
        raise ValueError(f"output drift thresholds: missing {missing}, unknown {unknown}; expected a significance "
                         f"level for each of {list(OUTPUT_TESTS)}")
    for key in OUTPUT_TESTS:
        _check_alpha(f"output drift thresholds[{key!r}]", thresholds[key])
    return {k: float(thresholds[k]) for k in OUTPUT_TESTS}


def _rate_test(name: str, reference: list[bool], current: list[bool], alpha: float, what: str) -> DriftTest:
    """Fisher's exact test (two-sided) on the 2x2 table; statistic = current rate - reference rate."""
    hits_ref, hits_cur = sum(reference), sum(current)
    table = [[hits_ref, len(reference) - hits_ref], [hits_cur, len(current) - hits_cur]]
    p_value = float(stats.fisher_exact(table, alternative="two-sided").pvalue)
    change = hits_cur / len(current) - hits_ref / len(reference)
    return DriftTest(name, change, p_value, alpha, p_value <= alpha,
                     f"scipy fisher_exact (two-sided) on {what}: reference {hits_ref}/{len(reference)}, "
                     f"current {hits_cur}/{len(current)}; statistic = current rate - reference rate")


def output_drift(reference: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]], *,
                 thresholds: Mapping[str, float], min_window: int = MIN_WINDOW) -> list[DriftTest]:
    """Drift of the answers: records {"answer": str, "cited": int, "toxic": bool | None}.

    `thresholds` holds a significance level per test, keys OUTPUT_TESTS:
    - answer_length: two-sample Kolmogorov-Smirnov test (scipy ks_2samp) on answer lengths in words;
    - refusal_rate: share of refusals (is_refusal: empty, or a refusal phrase near the start);
    - toxicity_rate: share of toxic answers among the scored ones (toxic not None). With fewer than min_window
      scored answers in either window this test does not run: p_value None, drifted False, method says why;
    - citation_rate: share of answers that cited at least one passage (cited > 0).
    Rates are compared with Fisher's exact test (two-sided), which holds for small counts and zero rates.
    """
    alphas = output_alphas(thresholds)
    require_window("output drift", len(reference), len(current), min_window)
    ref = [_answer(r, i, "reference") for i, r in enumerate(reference)]
    cur = [_answer(r, i, "current") for i, r in enumerate(current)]

    lengths = stats.ks_2samp([a.words for a in ref], [a.words for a in cur], alternative="two-sided")
    results = [DriftTest("answer_length", float(lengths.statistic), float(lengths.pvalue), alphas["answer_length"],
                         float(lengths.pvalue) <= alphas["answer_length"],
                         "scipy ks_2samp (two-sided) on answer lengths in words; statistic = KS distance D")]
    results.append(_rate_test("refusal_rate", [a.refusal for a in ref], [a.refusal for a in cur],
                              alphas["refusal_rate"], "refusals"))
    scored_ref = [a.toxic for a in ref if a.toxic is not None]
    scored_cur = [a.toxic for a in cur if a.toxic is not None]
    if len(scored_ref) < min_window or len(scored_cur) < min_window:
        results.append(DriftTest("toxicity_rate", math.nan, None, alphas["toxicity_rate"], False,
                                 f"not run: not enough data: {len(scored_ref)} reference and {len(scored_cur)} "
                                 f"current answers scored for toxicity; each needs at least {min_window}"))
    else:
        results.append(_rate_test("toxicity_rate", scored_ref, scored_cur, alphas["toxicity_rate"],
                                  "toxic answers among those scored"))
    results.append(_rate_test("citation_rate", [a.cited for a in ref], [a.cited for a in cur],
                              alphas["citation_rate"], "answers citing >= 1 passage"))
    return results
