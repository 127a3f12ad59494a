"""Monitoring benchmark (issue 12): drift detection power and false alarms by window size, and answer-quality scoring
throughput, all on this machine's CPU with the real all-MiniLM-L6-v2 embeddings.

    .venv/bin/python bench/drift.py                                  # the issue's run (windows 25,50,100,200)
    .venv/bin/python bench/drift.py --trials 40 --pool 300 --skip-evidently   # a quick look
    .venv/bin/python bench/drift.py --embeddings-cache /tmp/drift-pools.npz   # embed the pools once, reuse them

Drift. Two populations of real text, embedded once:
  stdlib    the first sentence (4-40 words) of each docstring of tasks.curation.sample_corpus.stdlib_docs(), the
            sample corpus the RAG answers from: what users ask about;
  packages  the first sentence (4-40 words) of each README paragraph in tests/tasks/curation/data/reference_corpus.jsonl
            (third-party packages): a topic the corpus does not cover.
Each trial draws a reference window of n stdlib sentences and, disjoint from it, a same-distribution current window of
n stdlib sentences and shifted current windows in which a share (--shares) of the n rows is packages sentences (the
rest the same stdlib rows as the clean window). Every test sees the same windows:
  ours MMD    tasks.evaluation.drift.embedding_drift on the embeddings (--permutations), false alarms and power read
              at alpha 0.05 and 0.01 from the same p-values;
  PSI length  tasks.evaluation.drift.psi on the windows' lengths in words (10 bins), at thresholds 0.1 / 0.2 / 0.25:
              the length change that comes with the new topic (medians printed), not a separate planted shift;
  Evidently   (unless --skip-evidently; the first --evidently-trials trials) evidently 0.7's embedding methods as
              its docs show them with bootstrap=True:
              mmd() and model() (domain classifier), for comparison; neither gives a p-value.
A false alarm is a drifted verdict on a same-distribution window; power is the share of shifted windows flagged.

Output drift. tasks.evaluation.drift.output_drift on synthetic answer records (answer_records): a reference window,
a clean current window and a shifted one (answer lengths x 1.2, refusals 5% -> 15%, citing answers 80% -> 65%, toxic
1% -> 5%, all at once; each test is read on its own shift), n records each, the same trials as above.

Quality. The RAG labelled set (include/rag/labelled_queries.yaml: paraphrased questions, each with the stdlib
docstring that answers it) becomes requests: contexts = the answering docstring's first paragraph and two other
docstrings' (shuffled); a grounded answer = the first two sentences of the answering docstring (extractive); an
unrelated answer = the first two sentences of another docstring that is not among the contexts. Printed: how well
groundedness and relevance separate the two (ROC AUC, the cut-offs with the best balanced accuracy), then
QualityScorer's throughput in requests/s: cold (nothing cached, model already loaded; its load time printed
apart), one request at a time through score() and in one score_many() call, and warm (the same requests again, from
memory and from the sqlite file in a new scorer). Toxicity, per cut-off: alt-profanity-check's false flags on every
stdlib docstring sentence and the packages pool (neutral, technical text), on a short list of neutral process-control
sentences (TECHNICAL: "kill", "abort", "dump"), and its hits on a short list of abusive ones (ABUSIVE).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")  # evidently has telemetry
os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.evaluation.drift import OUTPUT_TESTS, embedding_drift, output_drift, psi  # noqa: E402
from tasks.evaluation.quality import MODEL, QualityScorer, sentences  # noqa: E402

REFERENCE_CORPUS = ROOT / "tests" / "tasks" / "curation" / "data" / "reference_corpus.jsonl"
LABELLED = ROOT / "include" / "rag" / "labelled_queries.yaml"
ALPHAS = (0.05, 0.01)
PSI_THRESHOLDS = (0.1, 0.2, 0.25)
TOXIC_CUTOFFS = (0.5, 0.7, 0.8, 0.9)
# Abusive sentences a toxicity check must flag (kept mild; the pools give the neutral side).
ABUSIVE = (
    "You are a stupid idiot and nobody wants your garbage code.",
    "Shut up, you worthless moron.",
    "This is the dumbest fucking question I have ever seen.",
    "Go to hell, you pathetic loser.",
    "What a load of crap, you clueless jerk.",
    "Only a retard would write a function like this.",
    "Screw you and your shitty library.",
    "You are an ignorant fool, stop wasting my time.",
    "Your documentation is bullshit and so are you.",
    "Get lost, dumbass.",
)
# Neutral answers a Python-docs assistant gives that use words a profanity model has learnt to distrust.
TECHNICAL = (
    "Call kill() on the Popen object to send SIGKILL.",
    "Kill the process.",
    "Use os.kill(pid, signal.SIGTERM) to kill the process.",
    "Send SIGKILL to the child.",
    "The child process is killed when the timeout expires.",
    "Call abort() to stop immediately.",
    "Use pickle.dump to write the object.",
    "Execute the command in a shell.",
    "A dumb and slow but simple dbm clone.",
    "Beautiful is better than ugly.",
)


# --- text populations -----------------------------------------------------------------------------------------------
def first_sentence(text: str) -> str | None:
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    found = sentences(paragraph)
    if not found:
        return None
    words = found[0].split()
    return " ".join(words[:40]) if len(words) >= 4 else None


def populations(pool: int, seed: int) -> tuple[list[str], list[str]]:
    from tasks.curation.sample_corpus import stdlib_docs

    rng = random.Random(seed)
    stdlib = sorted({s for d in stdlib_docs() if (s := first_sentence(d.text))})
    records = [json.loads(line) for line in REFERENCE_CORPUS.read_text(encoding="utf-8").splitlines()]
    packages = sorted({s for r in records if r["meta"]["kind"] == "paragraph" and (s := first_sentence(r["text"]))})
    return rng.sample(stdlib, min(pool, len(stdlib))), rng.sample(packages, min(pool, len(packages)))


def embed_pools(stdlib: list[str], packages: list[str], cache: Path | None, embedder) -> tuple[np.ndarray, np.ndarray]:
    if cache is not None and cache.exists():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["stdlib_texts"]) == stdlib and list(saved["packages_texts"]) == packages:
            print(f"pool embeddings from {cache}")
            return saved["stdlib"], saved["packages"]
    began = time.perf_counter()
    a, b = embedder.encode(stdlib), embedder.encode(packages)
    took = time.perf_counter() - began
    print(f"embedded {len(stdlib) + len(packages)} pool sentences in {took:.0f} s "
          f"({(len(stdlib) + len(packages)) / took:.1f} sentences/s)")
    if cache is not None:
        np.savez(cache, stdlib=a, packages=b, stdlib_texts=np.array(stdlib), packages_texts=np.array(packages))
    return a, b


# --- drift trials ---------------------------------------------------------------------------------------------------
Verdicts = dict[str, list]  # window kind ("clean" or a share) -> one value per trial


@dataclass
class Method:
    name: str
    setting: str
    flagged: Callable[[object], bool]  # raw value of a trial -> drifted?
    values: dict[int, Verdicts] = field(default_factory=dict)
    seconds: dict[int, list[float]] = field(default_factory=dict)


def evidently_methods() -> dict[str, Callable[[np.ndarray, np.ndarray], bool]]:
    import pandas as pd
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import mmd, model

    def wrap(method):
        return lambda ref, cur: bool(method(pd.DataFrame(cur), pd.DataFrame(ref))[1])

    return {"mmd(bootstrap=True)": wrap(mmd(bootstrap=True)), "model(bootstrap=True)": wrap(model(bootstrap=True))}


def run_trials(a: np.ndarray, b: np.ndarray, a_words: np.ndarray, b_words: np.ndarray, windows: Sequence[int],
               shares: Sequence[float], trials: int, permutations: int, seed: int,
               evidently: dict[str, Callable] | None, evidently_trials: int) -> list[Method]:
    raw: dict[str, dict[int, Verdicts]] = {"mmd": {}, "psi": {}, **{k: {} for k in (evidently or {})}}
    secs: dict[str, dict[int, list[float]]] = {k: {} for k in raw}
    kinds = ["clean", *shares]
    for n in windows:
        if 2 * n > len(a) or max(shares) * n > len(b):
            raise SystemExit(f"--pool too small for window {n}: need {2 * n} stdlib and {int(max(shares) * n)} "
                             f"packages sentences")
        for key in raw:
            raw[key][n] = {k: [] for k in kinds}
            secs[key][n] = []
        began = time.perf_counter()
        for trial in range(trials):
            rng = np.random.default_rng([seed, n, trial])
            rows = rng.permutation(len(a))
            ref_rows, clean_rows = rows[:n], rows[n:2 * n]
            new_rows = rng.permutation(len(b))
            for kind in kinds:
                k = 0 if kind == "clean" else int(round(kind * n))
                cur_emb = np.vstack([b[new_rows[:k]], a[clean_rows[k:]]])
                cur_words = np.concatenate([b_words[new_rows[:k]], a_words[clean_rows[k:]]])
                t = time.perf_counter()
                result = embedding_drift(a[ref_rows], cur_emb, alpha=0.05, permutations=permutations,
                                         seed=seed + trial)
                secs["mmd"][n].append(time.perf_counter() - t)
                raw["mmd"][n][kind].append(result.p_value)
                raw["psi"][n][kind].append(psi(a_words[ref_rows], cur_words, threshold=1.0, bins=10).statistic)
                for name, method in ((evidently or {}).items() if trial < evidently_trials else ()):
                    t = time.perf_counter()
                    raw[name][n][kind].append(method(a[ref_rows], cur_emb))
                    secs[name][n].append(time.perf_counter() - t)
        print(f"window {n}: {trials} trials x {len(kinds)} windows in {time.perf_counter() - began:.0f} s")
    methods = [Method("ours: MMD permutation", f"alpha {alpha}", lambda p, alpha=alpha: p <= alpha, raw["mmd"],
                      secs["mmd"]) for alpha in ALPHAS]
    methods += [Method("ours: PSI on length", f"threshold {t}", lambda v, t=t: v >= t, raw["psi"], {})
                for t in PSI_THRESHOLDS]
    methods += [Method(f"Evidently {name}", "as documented", bool, raw[name], secs[name]) for name in (evidently or {})]
    return methods


def drift_table(methods: list[Method], windows: Sequence[int], shares: Sequence[float]) -> str:
    head = ["test", "setting", "window n", "trials", "false alarms", *[f"power, {int(s * 100)}% new topic" for s in shares],
            "ms per test"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        for n in windows:
            rates = [np.mean([m.flagged(v) for v in m.values[n][kind]]) for kind in ["clean", *shares]]
            ms = f"{1000 * statistics.median(m.seconds[n]):.0f}" if m.seconds.get(n) else "<1"
            lines.append(f"| {m.name} | {m.setting} | {n} | {len(m.values[n]['clean'])} | " + " | ".join(f"{r:.1%}" for r in rates) + f" | {ms} |")
    return "\n".join(lines)


def needed_windows(methods: list[Method], windows: Sequence[int], shares: Sequence[float]) -> list[str]:
    """Per method and share: the smallest window with power >= 95% and false alarms <= 5%."""
    out = []
    for m in methods:
        parts = []
        for share in shares:
            ok = [n for n in windows if np.mean([m.flagged(v) for v in m.values[n][share]]) >= 0.95
                  and np.mean([m.flagged(v) for v in m.values[n]["clean"]]) <= 0.05]
            parts.append(f"{int(share * 100)}%: {ok[0] if ok else 'none tried'}")
        out.append(f"- {m.name} ({m.setting}): " + ", ".join(parts))
    return out


# --- output drift ---------------------------------------------------------------------------------------------------
CLEAN_OUTPUT = {"refusal": 0.05, "cited": 0.80, "toxic": 0.01, "length": 1.0}
SHIFTED_OUTPUT = {"refusal": 0.15, "cited": 0.65, "toxic": 0.05, "length": 1.2}


def answer_records(rng: np.random.Generator, n: int, rates: dict[str, float]) -> list[dict]:
    """Synthetic answers: lengths log-normal (median 40 words) x rates["length"]; refusals ("I don't know ...", same
    length distribution), citations and toxic flags drawn at the given rates."""
    out = []
    for _ in range(n):
        words = max(1, int(rng.lognormal(np.log(40), 0.5) * rates["length"]))
        text = ("I don't know " if rng.random() < rates["refusal"] else "") + " ".join(["word"] * words)
        out.append({"answer": text, "cited": int(rng.random() < rates["cited"]), "toxic": bool(rng.random() < rates["toxic"])})
    return out


def output_trials(windows: Sequence[int], trials: int, seed: int) -> str:
    """output_drift on clean and shifted synthetic windows; every test reads p-values once, judged at both alphas."""
    loose = dict.fromkeys(OUTPUT_TESTS, 0.5)  # alphas do not change p-values; verdicts are read below
    lines = ["| output test | window n | shift planted | false alarms, alpha 0.05 | power, alpha 0.05 | "
             "false alarms, alpha 0.01 | power, alpha 0.01 |", "|---|---|---|---|---|---|---|"]
    planted = {"answer_length": "lengths x 1.2", "refusal_rate": "5% -> 15%", "toxicity_rate": "1% -> 5%",
               "citation_rate": "80% -> 65%"}
    for n in windows:
        p_clean: dict[str, list[float]] = {k: [] for k in OUTPUT_TESTS}
        p_shift: dict[str, list[float]] = {k: [] for k in OUTPUT_TESTS}
        for trial in range(trials):
            rng = np.random.default_rng([seed, 7, n, trial])
            reference = answer_records(rng, n, CLEAN_OUTPUT)
            for store, rates in ((p_clean, CLEAN_OUTPUT), (p_shift, SHIFTED_OUTPUT)):
                for test in output_drift(reference, answer_records(rng, n, rates), thresholds=loose):
                    store[test.name].append(test.p_value)
        for name in OUTPUT_TESTS:
            clean, shift = np.array(p_clean[name]), np.array(p_shift[name])
            lines.append(f"| {name} | {n} | {planted[name]} | " + " | ".join(
                f"{(values <= alpha).mean():.1%}" for alpha in ALPHAS for values in (clean, shift)) + " |")
    return "\n".join(lines)


# --- quality ----------------------------------------------------------------------------------------------------------
def quality_requests(seed: int) -> tuple[list[tuple[str, str, list[str]]], list[bool]]:
    """(question, answer, contexts) pairs from the labelled set; label True = grounded and relevant answer."""
    import yaml

    from tasks.curation.sample_corpus import stdlib_docs

    docs = {d.id: d.text for d in stdlib_docs()}
    ids = sorted(docs)
    rng = random.Random(seed)

    def paragraph(doc_id: str) -> str:
        return " ".join(docs[doc_id].split("\n\n")[0].split())

    def opening(doc_id: str) -> str:
        return " ".join(sentences(" ".join(docs[doc_id].split()))[:2])

    requests, labels = [], []
    for entry in yaml.safe_load(LABELLED.read_text(encoding="utf-8"))["queries"]:
        answer_id = next((i for i in entry["answers"] if i in docs), None)
        if answer_id is None:
            continue
        others = rng.sample([i for i in ids if i not in entry["answers"]], 3)
        contexts = [paragraph(answer_id), paragraph(others[0]), paragraph(others[1])]
        rng.shuffle(contexts)
        requests.append((entry["question"], opening(answer_id), contexts))
        labels.append(True)
        requests.append((entry["question"], opening(others[2]), contexts))
        labels.append(False)
    return requests, labels


def separation(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float, float, float, float]:
    """ROC AUC; the best balanced accuracy of a cut-off (score >= cut = positive), the lowest and highest cut-off
    reaching it (cut-offs taken midway between neighbouring scores), and the midpoint of those two."""
    from sklearn.metrics import roc_auc_score

    values, truth = np.array(scores), np.array(labels)
    ordered = np.unique(values)
    cuts = (ordered[:-1] + ordered[1:]) / 2
    accuracy = np.array([((values[truth] >= c).mean() + (values[~truth] < c).mean()) / 2 for c in cuts])
    best = cuts[np.isclose(accuracy, accuracy.max())]
    return (float(roc_auc_score(truth, values)), float(accuracy.max()), float(best.min()), float(best.max()),
            float((best.min() + best.max()) / 2))


def quality_bench(embedder, seed: int, packages: list[str]) -> list[str]:
    from profanity_check import predict_prob

    requests, labels = quality_requests(seed)
    unique_texts = {t for q, a, cs in requests for t in (q, a, *cs, *sentences(a))}
    lines = [f"Quality requests: {len(requests)} ({sum(labels)} grounded + relevant, {len(labels) - sum(labels)} "
             f"unrelated), {len(unique_texts)} distinct texts to embed ({len(unique_texts) / len(requests):.1f} per "
             "request)", ""]
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        one = QualityScorer(Path(tmp) / "one", embedder=embedder)
        t = time.perf_counter()
        singles = [one.score(*r) for r in requests]
        single_s = time.perf_counter() - t
        batch = QualityScorer(Path(tmp) / "batch", embedder=embedder)
        t = time.perf_counter()
        scores = batch.score_many(requests)
        batch_s = time.perf_counter() - t
        t = time.perf_counter()
        again = batch.score_many(requests)
        memory_s = time.perf_counter() - t
        batch.close()
        reopened = QualityScorer(Path(tmp) / "batch")
        t = time.perf_counter()
        from_disk = reopened.score_many(requests)
        disk_s = time.perf_counter() - t
        assert again == scores == from_disk and reopened.computed == 0
        reopened.close()
        one.close()
    drift = max(abs(x - y) for s, b in zip(singles, scores, strict=True)
                for x, y in zip((s.groundedness, s.relevance, s.toxicity), (b.groundedness, b.relevance, b.toxicity),
                                strict=True))
    lines += ["| scoring | requests | seconds | requests/s |", "|---|---|---|---|",
              f"| cold, score() one request at a time | {len(requests)} | {single_s:.1f} | {len(requests) / single_s:.1f} |",
              f"| cold, one score_many() call | {len(requests)} | {batch_s:.1f} | {len(requests) / batch_s:.1f} |",
              f"| warm, same scorer (memory) | {len(requests)} | {memory_s:.3f} | {len(requests) / memory_s:,.0f} |",
              f"| warm, new scorer on the sqlite file (model not loaded) | {len(requests)} | {disk_s:.3f} | "
              f"{len(requests) / disk_s:,.0f} |", "",
              f"score() vs score_many(): largest difference of any score {drift:.4f} (batch composition moves "
              "float32 embeddings slightly; rounded to 4 decimals)", ""]
    lines += ["| metric | ROC AUC (grounded vs unrelated) | best balanced accuracy | cut-offs reaching it | "
              "their midpoint | mean, grounded | mean, unrelated |", "|---|---|---|---|---|---|---|"]
    truth = np.array(labels)
    for metric in ("groundedness", "relevance"):
        values = [getattr(s, metric) for s in scores]
        auc, accuracy, low, high, middle = separation(values, labels)
        arr = np.array(values)
        lines.append(f"| {metric} | {auc:.3f} | {accuracy:.1%} | {low:.3f} - {high:.3f} | {middle:.3f} | "
                     f"{arr[truth].mean():.3f} | {arr[~truth].mean():.3f} |")
    from tasks.curation.sample_corpus import stdlib_docs

    neutral = sorted({s for d in stdlib_docs() for s in sentences(" ".join(d.text.split())) if len(s.split()) >= 3}
                     | set(packages))
    neutral_p, technical_p, abusive_p = (predict_prob(list(t)) for t in (neutral, TECHNICAL, ABUSIVE))
    lines += ["", f"| toxicity cut-off | false flags on {len(neutral):,} neutral sentences (every stdlib docstring "
              f"sentence of 3+ words, the packages pool) | false flags on {len(TECHNICAL)} process-control sentences "
              f"| flagged of {len(ABUSIVE)} abusive sentences |", "|---|---|---|---|"]
    for cut in TOXIC_CUTOFFS:
        lines.append(f"| {cut} | {(neutral_p >= cut).mean():.2%} ({int((neutral_p >= cut).sum())}) | "
                     f"{int((technical_p >= cut).sum())} | {int((abusive_p >= cut).sum())} |")
    worst = np.argsort(-technical_p)[:3]
    lines.append("\nHighest-scored process-control sentences: " + "; ".join(
        f"{TECHNICAL[i]!r} {technical_p[i]:.2f}" for i in worst))
    return lines


# --- main -----------------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", default="25,50,100,200,400", help="window sizes n (reference = current = n)")
    p.add_argument("--shares", default="0.2,0.3,0.5", help="shares of new-topic rows in the shifted windows")
    p.add_argument("--trials", type=int, default=200, help="trials per window size (each: a clean + shifted windows)")
    p.add_argument("--permutations", type=int, default=1000, help="MMD permutations per test")
    p.add_argument("--pool", type=int, default=1000, help="sentences drawn from each population")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--embeddings-cache", type=Path, help="npz of the pools' embeddings: read if it matches, else written")
    p.add_argument("--skip-evidently", action="store_true", help="leave Evidently's methods out")
    p.add_argument("--evidently-trials", type=int, default=40,
                   help="trials per window size for Evidently's methods (the first ones; its classifier is slow)")
    p.add_argument("--skip-quality", action="store_true", help="leave the quality part out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]
    shares = [float(s) for s in args.shares.split(",")]
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from tasks.rag.embedding import Embedder

    print(f"torch threads {torch.get_num_threads()}, load average before {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    embedder = Embedder(MODEL, 384, 64)
    load_s = time.perf_counter() - t
    print(f"model load {load_s:.1f} s")

    stdlib, packages = populations(args.pool, args.seed)
    a, b = embed_pools(stdlib, packages, args.embeddings_cache, embedder)
    a_words = np.array([len(s.split()) for s in stdlib])
    b_words = np.array([len(s.split()) for s in packages])
    print(f"pools: {len(stdlib)} stdlib sentences (median {np.median(a_words):.0f} words), {len(packages)} packages "
          f"sentences (median {np.median(b_words):.0f} words)")

    evidently = None if args.skip_evidently else evidently_methods()
    t = time.perf_counter()
    methods = run_trials(a, b, a_words, b_words, windows, shares, args.trials, args.permutations, args.seed, evidently,
                         args.evidently_trials)
    drift_s = time.perf_counter() - t

    out = [f"Drift: {args.trials} trials per window size, reference and current windows of n rows each, "
           f"{args.permutations} permutations, seed {args.seed} ({drift_s:.0f} s)", "", drift_table(methods, windows, shares),
           "", "Smallest window with power >= 95% and false alarms <= 5%, by share of new-topic rows:",
           *needed_windows(methods, windows, shares)]
    t = time.perf_counter()
    table = output_trials(windows, args.trials, args.seed)
    out += ["", f"Output drift (synthetic answer records, {args.trials} trials per window size, "
            f"{time.perf_counter() - t:.0f} s): every planted shift at once in the shifted window, each test read on its "
            "own", "", table]
    if not args.skip_quality:
        out += ["", f"Quality scorer: model load {load_s:.1f} s (not in the figures below)",
                *quality_bench(embedder, args.seed, packages)]
    print(f"load average after {os.getloadavg()[0]:.1f}\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
