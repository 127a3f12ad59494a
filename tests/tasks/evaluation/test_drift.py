"""Drift tests: a planted shift is detected and same-distribution windows are flagged at about the chosen rate (fixed
seeds, many trials), the MMD statistic equals a brute-force one, PSI matches cases worked by hand and Evidently's own
PSI on categories, output drift finds a planted refusal-rate jump, and empty or tiny windows give WindowTooSmall."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.evaluation.drift import (
    MIN_WINDOW,
    OUTPUT_TESTS,
    DriftTest,
    WindowTooSmall,
    embedding_drift,
    is_refusal,
    output_drift,
    psi,
)

os.environ.setdefault("DO_NOT_TRACK", "1")  # evidently (imported by one test) has telemetry
os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")

ALPHAS = dict.fromkeys(OUTPUT_TESTS, 0.01)
THRESHOLDS = Path(__file__).resolve().parents[3] / "include" / "monitoring" / "thresholds.yaml"


def unit_rows(rng: np.random.Generator, rows: int, dims: int = 32, offset: float = 0.0) -> np.ndarray:
    """Unit vectors (as sentence embeddings are) around a centre; offset moves the centre along one axis."""
    centre = np.zeros(dims)
    centre[0] = 1.0 + offset
    centre[1] = 1.0
    vectors = centre + rng.normal(scale=0.6, size=(rows, dims))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- embedding_drift ------------------------------------------------------------------------------------------------
def test_same_distribution_windows_alarm_at_about_alpha_and_a_planted_shift_is_always_found() -> None:
    alarms = found = 0
    for trial in range(60):
        rng = np.random.default_rng(trial)
        reference = unit_rows(rng, 40)
        alarms += embedding_drift(reference, unit_rows(rng, 40), alpha=0.1, permutations=199, seed=trial).drifted
        shifted = np.vstack([unit_rows(rng, 28), unit_rows(rng, 12, offset=-3.0)])  # 30% of rows from elsewhere
        found += embedding_drift(reference, shifted, alpha=0.1, permutations=199, seed=trial).drifted
    assert 1 <= alarms <= 12, f"{alarms}/60 false alarms at alpha 0.1 (expected about 6)"
    assert found >= 57, f"planted shift found in {found}/60 trials"


def test_mmd_statistic_is_the_unbiased_estimate_and_the_p_value_is_seeded() -> None:
    rng = np.random.default_rng(3)
    x, y = unit_rows(rng, 30, dims=8), unit_rows(rng, 25, dims=8, offset=0.3)
    pooled = np.vstack([x, y])
    squared = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    kernel = np.exp(-squared / np.median(squared[np.triu_indices(55, 1)]))
    kxx, kyy, kxy = kernel[:30, :30], kernel[30:, 30:], kernel[:30, 30:]
    expected = ((kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (25 * 24) - 2 * kxy.mean())

    result = embedding_drift(x, y, alpha=0.05, permutations=500, seed=7)
    assert result.statistic == pytest.approx(expected, rel=1e-9)
    assert result == embedding_drift(x, y, alpha=0.05, permutations=500, seed=7)
    assert result.name == "query_embedding" and result.threshold == 0.05 and "permutation" in result.method


def test_an_obvious_shift_gets_the_smallest_p_value_the_permutations_allow() -> None:
    rng = np.random.default_rng(0)
    result = embedding_drift(unit_rows(rng, 30), unit_rows(rng, 30, offset=-3.0), alpha=0.05, permutations=99, seed=1)
    assert result.p_value == pytest.approx(1 / 100) and result.drifted


def test_large_windows_are_sampled_down_reproducibly_and_still_detect_a_shift() -> None:
    rng = np.random.default_rng(4)
    reference, shifted = unit_rows(rng, 90), unit_rows(rng, 70, offset=-3.0)
    result = embedding_drift(reference, shifted, alpha=0.05, permutations=99, seed=2, max_rows=40)
    assert "sampled to 40 + 40 of 90 + 70 rows" in result.method and result.drifted
    assert result == embedding_drift(reference, shifted, alpha=0.05, permutations=99, seed=2, max_rows=40)
    assert "sampled" not in embedding_drift(reference, shifted, alpha=0.05, permutations=99, seed=2).method


@pytest.mark.parametrize(("reference_rows", "current_rows"), [(0, 25), (25, 0), (5, 25), (MIN_WINDOW - 1, 300)])
def test_empty_or_tiny_embedding_windows_are_not_enough_data(reference_rows: int, current_rows: int) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(WindowTooSmall) as raised:
        embedding_drift(unit_rows(rng, reference_rows), unit_rows(rng, current_rows), alpha=0.05, permutations=99,
                        seed=0)
    message = str(raised.value)
    assert f"reference window has {reference_rows} records" in message
    assert f"current window {current_rows}" in message and f"at least {MIN_WINDOW}" in message
    assert isinstance(raised.value, ValueError)
    again = pickle.loads(pickle.dumps(raised.value))  # crosses process boundaries intact
    assert str(again) == message and again.minimum == MIN_WINDOW


def test_an_empty_list_window_and_a_raised_minimum_are_not_enough_data() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(WindowTooSmall, match="reference window has 0 records"):
        embedding_drift(np.array([]), unit_rows(rng, 30), alpha=0.05, permutations=9, seed=0)
    with pytest.raises(WindowTooSmall, match="each needs at least 200"):
        embedding_drift(unit_rows(rng, 150), unit_rows(rng, 300), alpha=0.05, permutations=9, seed=0, min_window=200)


def test_bad_embedding_input_names_the_problem() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="32-d vectors and the current window 16-d"):
        embedding_drift(unit_rows(rng, 30), unit_rows(rng, 30, dims=16), alpha=0.05, permutations=9, seed=0)
    broken = unit_rows(rng, 30)
    broken[4, 2] = np.nan
    with pytest.raises(ValueError, match="row 4 of the current window"):
        embedding_drift(unit_rows(rng, 30), broken, alpha=0.05, permutations=9, seed=0)
    with pytest.raises(ValueError, match="significance level 1.5"):
        embedding_drift(unit_rows(rng, 30), unit_rows(rng, 30), alpha=1.5, permutations=9, seed=0)
    with pytest.raises(ValueError, match="permutations 0"):
        embedding_drift(unit_rows(rng, 30), unit_rows(rng, 30), alpha=0.05, permutations=0, seed=0)


# --- psi ------------------------------------------------------------------------------------------------------------
def test_psi_of_a_known_numeric_shift() -> None:
    # reference 0..99: deciles -> 10 bins of 10, plus empty below/above-range bins; current 50..149: 10 in each of the
    # top five deciles and 50 above the range. Pseudo-count 0.5 on 12 bins: shares (count + 0.5) / 106.
    result = psi(list(range(100)), list(range(50, 150)), threshold=0.25, bins=10, name="query_length")
    expected = 5 * (0.5 - 10.5) / 106 * math.log(0.5 / 10.5) + (50.5 - 0.5) / 106 * math.log(50.5 / 0.5)
    assert result.statistic == pytest.approx(expected) and result.statistic == pytest.approx(3.6130, abs=1e-4)
    assert result.drifted and result.p_value is None and result.name == "query_length"
    assert psi(list(range(100)), list(range(100)), threshold=0.25).statistic == 0.0


def test_psi_sees_values_outside_a_constant_reference() -> None:
    assert psi([10] * 50, [50] * 50, threshold=0.25).drifted
    assert not psi([10] * 50, [10] * 50, threshold=0.25).drifted


def test_psi_of_a_known_categorical_shift_and_against_evidently() -> None:
    result = psi(["en"] * 50 + ["de"] * 50, ["en"] * 75 + ["de"] * 25, threshold=0.25, categorical=True,
                 name="query_language")
    expected = (75.5 - 50.5) / 101 * math.log(75.5 / 50.5) + (25.5 - 50.5) / 101 * math.log(25.5 / 50.5)
    assert result.statistic == pytest.approx(expected) and result.statistic == pytest.approx(0.2687, abs=1e-4)
    assert result.drifted

    import pandas as pd
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    reference, current = ["en"] * 60 + ["de"] * 30 + ["fr"] * 10, ["en"] * 40 + ["de"] * 35 + ["fr"] * 25
    theirs, _ = _psi(pd.Series(reference), pd.Series(current), ColumnType.Categorical, 0.1)
    ours = psi(reference, current, threshold=0.1, categorical=True, pseudo_count=0.0).statistic
    assert ours == pytest.approx(float(theirs), rel=1e-12)


def test_psi_on_lengths_separates_a_shift_from_noise_at_a_large_window() -> None:
    rng = np.random.default_rng(5)
    reference = rng.poisson(12, 400)
    assert psi(reference, rng.poisson(12, 400), threshold=0.1).statistic < 0.1
    assert psi(reference, rng.poisson(18, 400), threshold=0.1).statistic > 0.25


def test_psi_refuses_tiny_windows_and_bad_settings() -> None:
    with pytest.raises(WindowTooSmall, match="query_length: not enough data: the reference window has 0 records"):
        psi([], [3] * 40, threshold=0.2, name="query_length")
    with pytest.raises(WindowTooSmall, match="current window 3; each needs at least 20"):
        psi(["en"] * 40, ["en"] * 3, threshold=0.2, categorical=True)
    with pytest.raises(ValueError, match="PSI threshold 0"):
        psi([1] * 40, [1] * 40, threshold=0)
    with pytest.raises(ValueError, match="value 2 of the current window is nan"):
        psi([1] * 40, [1, 2, float("nan")] + [1] * 37, threshold=0.2)


# --- output drift ---------------------------------------------------------------------------------------------------
WORDS = "the function returns a list of paths found under the given directory and its children".split()


def answers(seed: int, count: int, refusals: int, cited: float = 0.8, toxic: int = 1,
            scored: bool = True) -> list[dict]:
    """Answers of random length; `refusals` of them refuse, about `cited` cite a passage, `toxic` are toxic."""
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        length = int(rng.integers(6, 30))
        text = " ".join(rng.choice(WORDS, length))
        if index < refusals:
            text = "I don't know, the passages do not say " + " ".join(rng.choice(WORDS, max(length - 8, 0)))
        out.append({"answer": text, "cited": int(rng.random() < cited) * int(rng.integers(1, 4)),
                    "toxic": (index >= count - toxic) if scored else None})
    return out


def by_name(results: list[DriftTest]) -> dict[str, DriftTest]:
    assert [r.name for r in results] == list(OUTPUT_TESTS)
    return {r.name: r for r in results}


def test_a_planted_refusal_rate_jump_is_flagged_and_nothing_else() -> None:
    results = by_name(output_drift(answers(1, 200, refusals=10), answers(2, 200, refusals=60), thresholds=ALPHAS))
    refusal = results["refusal_rate"]
    assert refusal.drifted and refusal.p_value < 1e-6 and refusal.statistic == pytest.approx(0.30 - 0.05)
    assert "10/200" in refusal.method and "60/200" in refusal.method
    assert not results["citation_rate"].drifted and not results["toxicity_rate"].drifted


def test_a_clean_window_has_no_output_drift() -> None:
    results = by_name(output_drift(answers(1, 200, refusals=10), answers(3, 200, refusals=12), thresholds=ALPHAS))
    assert not any(r.drifted for r in results.values()), results
    assert all(r.p_value is not None and 0 <= r.p_value <= 1 for r in results.values())


def test_citation_and_length_shifts_are_flagged() -> None:
    reference = answers(1, 150, refusals=5)
    fewer_citations = by_name(output_drift(reference, answers(4, 150, refusals=5, cited=0.3), thresholds=ALPHAS))
    assert fewer_citations["citation_rate"].drifted and fewer_citations["citation_rate"].statistic < -0.3
    longer = [{**r, "answer": r["answer"] + " " + r["answer"]} for r in answers(5, 150, refusals=5)]
    assert by_name(output_drift(reference, longer, thresholds=ALPHAS))["answer_length"].drifted


def test_the_shipped_thresholds_tell_planted_input_drift_from_a_clean_window_at_their_window_size() -> None:
    drift = yaml.safe_load(THRESHOLDS.read_text())["drift"]
    window, rng = drift["min_window"], np.random.default_rng(11)
    settings = {"alpha": drift["alpha"], "permutations": drift["permutations"], "seed": drift["seed"],
                "min_window": window}
    reference = unit_rows(rng, window)
    assert not embedding_drift(reference, unit_rows(rng, window), **settings).drifted
    shifted = np.vstack([unit_rows(rng, window - window // 5), unit_rows(rng, window // 5, offset=-1.0)])
    assert embedding_drift(reference, shifted, **settings).drifted
    lengths = rng.poisson(12, window)
    length_test = {"threshold": drift["psi_threshold"], "bins": drift["psi_bins"], "min_window": window}
    assert not psi(lengths, rng.poisson(12, window), **length_test).drifted
    assert psi(lengths, rng.poisson(15, window), **length_test).drifted


def test_the_shipped_thresholds_find_a_refusal_jump_at_their_window_size() -> None:
    drift = yaml.safe_load(THRESHOLDS.read_text())["drift"]
    window = drift["min_window"]
    results = by_name(output_drift(answers(1, window, refusals=window // 20), answers(2, window, refusals=window // 7),
                                   thresholds=drift["output"], min_window=window))
    assert results["refusal_rate"].drifted and not results["citation_rate"].drifted
    with pytest.raises(WindowTooSmall, match=f"at least {window}"):
        output_drift(answers(1, window, 5), answers(2, window - 1, 5), thresholds=drift["output"], min_window=window)


def test_unscored_toxicity_is_reported_as_not_run_not_as_a_crash() -> None:
    results = by_name(output_drift(answers(1, 50, 2), answers(2, 50, 2, scored=False), thresholds=ALPHAS))
    toxicity = results["toxicity_rate"]
    assert toxicity.p_value is None and not toxicity.drifted and math.isnan(toxicity.statistic)
    assert "not enough data: 50 reference and 0 current answers scored" in toxicity.method


def test_output_drift_on_empty_or_tiny_windows_and_bad_input() -> None:
    with pytest.raises(WindowTooSmall, match="output drift: not enough data: the reference window has 0 records and "
                                             "the current window 0; each needs at least 20"):
        output_drift([], [], thresholds=ALPHAS)
    with pytest.raises(WindowTooSmall, match="current window 4"):
        output_drift(answers(1, 50, 2), answers(2, 4, 0), thresholds=ALPHAS)
    with pytest.raises(ValueError, match=r"missing \['citation_rate'\]"):
        output_drift(answers(1, 50, 2), answers(2, 50, 2), thresholds={k: 0.01 for k in OUTPUT_TESTS[:3]})
    with pytest.raises(ValueError, match="significance level 5"):
        output_drift(answers(1, 50, 2), answers(2, 50, 2), thresholds={**ALPHAS, "refusal_rate": 5})
    broken = answers(2, 50, 2)
    broken[3]["cited"] = "two"
    with pytest.raises(ValueError, match="record 3 of the current window: 'cited' must be an integer"):
        output_drift(answers(1, 50, 2), broken, thresholds=ALPHAS)


@pytest.mark.parametrize(("answer", "refusal"), [
    ("", True), ("   ", True), ("I don't know.", True), ("I DON\u2019T KNOW", True),
    ("Sorry, I can't help with that.", True), ("I cannot answer that question from these passages.", True),
    ("The passages do not mention a timeout.", True), ("There is not enough information in the context.", True),
    ("Use json.dumps; it returns a str.", False), ("The server cannot answer requests while it restarts.", False),
    ("shutil.which finds a program on PATH. " * 8 + "I don't know the rest.", False),  # past the first 200 chars
])
def test_refusal_heuristic(answer: str, refusal: bool) -> None:
    assert is_refusal(answer) is refusal
