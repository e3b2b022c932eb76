"""The hand-written grader corpus (tests/data/grader_corpus.jsonl): its shape, and the graders' accuracy on it.

Each case is (category, output, reference, verdict): the verdict a human grader gives the output for that reference,
written before the graders were changed (see the corpus's first commit). benchmarks/bench_graders.py measures the same
accuracies (and speed) for the README table; these tests hold the graders to them.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "grader_corpus.jsonl"
CATEGORIES = {
    "gsm8k", "boxed_latex", "currency_thousands", "fraction_decimal", "percent", "negative", "units", "mid_text",
    "answer_phrase", "bare_number", "garbage", "reference_format",
}


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_graders", ROOT / "benchmarks" / "bench_graders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    with open(CORPUS, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def results(corpus) -> dict:
    bench = load_bench()
    return {name: bench.evaluate(name, grader, corpus, repeats=1) for name, grader in bench.graders().items()}


def test_corpus_shape(corpus):
    assert len(corpus) >= 150
    counts = Counter(case["category"] for case in corpus)
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 10, counts
    for i, case in enumerate(corpus):
        assert set(case) == {"category", "output", "reference", "verdict"}, i
        assert isinstance(case["output"], str) and isinstance(case["reference"], str) and case["reference"], i
        assert isinstance(case["verdict"], bool), i
    verdicts = Counter(case["verdict"] for case in corpus)
    assert verdicts[True] >= 100 and verdicts[False] >= 40, verdicts  # both kinds of mistakes are measured
    assert len({(c["output"], c["reference"]) for c in corpus}) == len(corpus)  # no duplicate case


def test_best_grader_reaches_95_percent_and_beats_math_verify_alone(results):
    best = max(results["NumericMatch"]["accuracy"], results["MathVerify"]["accuracy"])
    assert best >= 0.95
    assert results["MathVerify"]["accuracy"] > results["math-verify alone"]["accuracy"]
    assert results["NumericMatch"]["accuracy"] > results["math-verify alone"]["accuracy"]
    assert results["NumericMatch"]["accuracy"] >= 0.95
    assert results["MathVerify"]["accuracy"] >= results["NumericMatch"]["accuracy"]


def test_numeric_match_never_fails_a_numeric_category(results):
    """NumericMatch's misses are symbolic references (\\sqrt, \\pi: not applicable, None) and at most one case of a
    category; every category is ≥ 85 %."""
    for category, counts in results["NumericMatch"]["per_category"].items():
        assert counts["correct"] / counts["n"] >= 0.85, (category, counts)
    for error in results["NumericMatch"]["errors"]:
        assert error["verdict"] is True, error  # it never calls a wrong output right on this corpus


def test_listed_issue_13_errors_are_all_right(corpus, results):
    """Every extraction error listed in issue 13 has corpus cases; both our graders get all of them right."""
    listed = ["Wait\u2026 so the answer is 6", "The answer is 30, because", "-$50", "14 m^2", "1 000", "1{,}000", "4.2e1",
              "1.5\\times10^{3}", "seven", "\u22127"]
    for needle in listed:
        cases = [c for c in corpus if needle in c["output"]]
        assert cases, needle
        for name in ("NumericMatch", "MathVerify"):
            wrong = [e for e in results[name]["errors"] if needle in e["output"]]
            assert not wrong, (name, needle, wrong)


def test_numeric_match_speed(corpus):
    """≤ 0.1 ms/item is the goal (benchmarks/results/graders.md has the measured figure); the test allows 10×
    headroom for a loaded shared CI machine, cold caches every run."""
    from trl_ext.rewards import NumericMatch

    bench = load_bench()
    grader = NumericMatch()
    completions = [c["output"] for c in corpus]
    answers = [c["reference"] for c in corpus]
    best = float("inf")
    for _ in range(3):
        bench.clear_caches()
        start = time.perf_counter()
        grader(completions=completions, answer=answers)
        best = min(best, time.perf_counter() - start)
    assert 1000 * best / len(corpus) < 1.0


def test_generated_gsm_symbolic_rationales():
    """Reasoning-gym chains of thought (text the corpus author did not write) as references and outputs: every
    verdict (known by construction) right, and never None — main 7e9edf9's NumericMatch gave None for all 200 cases
    whose reference is a rationale."""
    from trl_ext.rewards import MathVerify, NumericMatch

    bench = load_bench()
    cases = bench.generated_cases(n=20, seed=1)
    for grader in (NumericMatch(), MathVerify()):
        result = bench.evaluate(grader.__name__, grader, cases, repeats=1)
        assert result["accuracy"] == 1.0, result["errors"][:3]
        assert not any(e["reward"] is None for e in result["errors"])
        rewards = grader(completions=[c["output"] for c in cases], answer=[c["reference"] for c in cases])
        assert None not in rewards
