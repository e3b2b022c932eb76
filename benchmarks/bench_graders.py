"""Accuracy and speed of answer graders on the hand-written corpus tests/data/grader_corpus.jsonl.

Each corpus case is (category, output, reference, verdict): the verdict is what a human grader says about the output
given the reference. A grader is right on a case when ``reward == 1.0`` equals the verdict; ``None`` (not applicable)
counts as "not correct". Graders compared:

- ``NumericMatch`` and ``MathVerify`` (trl_ext.rewards), called as TRL calls reward functions;
- ``math-verify alone``: ``verify(parse(reference), parse(output))`` with math-verify's default extraction;
- TRL's ``accuracy_reward`` (trl.rewards), with the reference in its ``solution`` column.

Speed: milliseconds per item over the whole corpus in one batch, best of ``--repeats`` runs, with every cache of
ours cleared before each run (cold: no item is graded from a cache). One process, one thread.

A second, generated set checks the graders on text not written by the corpus author: reasoning-gym's gsm_symbolic
chains of thought (GSM8K format, ending in ``#### N``), as references and as outputs, in six variants whose verdict
is known by construction (the chain itself, "The answer is N.", ``\\boxed{N}``, the chain against the bare answer:
correct; ``#### N+1`` against the chain or the bare answer: wrong).

Usage:
    python benchmarks/bench_graders.py            # writes benchmarks/results/graders.{json,md}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "grader_corpus.jsonl"
RESULTS = ROOT / "benchmarks" / "results"


def load_corpus(path: Path = CORPUS) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def generated_cases(n: int = 50, seed: int = 0) -> list[dict]:
    """Six cases per reasoning-gym gsm_symbolic entry, verdicts by construction (see the module docstring)."""
    import reasoning_gym

    cases = []
    for entry in reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed):
        cot, answer = entry["metadata"]["answer_cot"], str(entry["answer"])
        wrong = str(int(float(answer)) + 1)
        head = cot.rsplit("####", 1)[0]
        for category, output, reference, verdict in [
            ("chain_vs_chain", cot, cot, True),
            ("answer_is_vs_chain", f"The answer is {answer}.", cot, True),
            ("boxed_vs_chain", f"So the total is $\\boxed{{{answer}}}$.", cot, True),
            ("chain_vs_answer", cot, answer, True),
            ("wrong_vs_chain", f"{head}#### {wrong}", cot, False),
            ("wrong_vs_answer", f"{head}#### {wrong}", answer, False),
        ]:
            cases.append({"category": category, "output": output, "reference": reference, "verdict": verdict})
    return cases


def clear_caches() -> None:
    from trl_ext.rewards import extract, math_verify

    for fn in (extract._parse_number, extract._stated_str, extract._reference_answer, math_verify._mv_parse):
        fn.cache_clear()


def graders() -> dict:
    from trl_ext.rewards import MathVerify, NumericMatch

    out = {"NumericMatch": NumericMatch(), "MathVerify": MathVerify()}

    def math_verify_alone(completions, answer, **kwargs):
        from math_verify import parse, verify

        rewards = []
        for completion, reference in zip(completions, answer):
            gold = parse(reference)
            rewards.append(float(verify(gold, parse(completion))) if gold else None)
        return rewards

    def trl_accuracy_reward(completions, answer, **kwargs):
        from trl.rewards import accuracy_reward

        return accuracy_reward([[{"role": "assistant", "content": c}] for c in completions], solution=answer)

    out["math-verify alone"] = math_verify_alone
    out["TRL accuracy_reward"] = trl_accuracy_reward
    return out


def evaluate(name: str, grader, corpus: list[dict], repeats: int) -> dict:
    completions = [case["output"] for case in corpus]
    answers = [case["reference"] for case in corpus]
    best = float("inf")
    rewards = None
    for _ in range(repeats):
        clear_caches()
        start = time.perf_counter()
        rewards = grader(completions=completions, answer=answers)
        best = min(best, time.perf_counter() - start)
    per_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    errors = []
    for case, reward in zip(corpus, rewards):
        said_correct = reward is not None and reward == 1.0
        right = said_correct == case["verdict"]
        per_category[case["category"]][0] += right
        per_category[case["category"]][1] += 1
        if not right:
            errors.append({**case, "reward": reward})
    correct = sum(c for c, _ in per_category.values())
    return {
        "grader": name,
        "accuracy": correct / len(corpus),
        "correct": correct,
        "n": len(corpus),
        "ms_per_item": 1000 * best / len(corpus),
        "per_category": {k: {"correct": c, "n": n} for k, (c, n) in sorted(per_category.items())},
        "errors": errors,
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Grader corpus: {meta['n']} hand-written cases (tests/data/grader_corpus.jsonl), {meta['machine']}.",
        "",
        "| grader | accuracy | ms / item |",
        "|---|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['grader']} | {100 * r['accuracy']:.1f} % ({r['correct']}/{r['n']}) | {r['ms_per_item']:.3f} |")
    categories = list(results[0]["per_category"])
    lines += ["", "| category | n | " + " | ".join(r["grader"] for r in results) + " |"]
    lines.append("|---|---:|" + "---:|" * len(results))
    for cat in categories:
        n = results[0]["per_category"][cat]["n"]
        cells = [f"{100 * r['per_category'][cat]['correct'] / n:.0f} %" for r in results]
        lines.append(f"| {cat} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--show-errors", action="store_true", help="print the cases each grader gets wrong")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # math-verify logs every unparsable output
    corpus = load_corpus()
    results = [evaluate(name, grader, corpus, args.repeats) for name, grader in graders().items()]
    generated = generated_cases()
    generated_results = [evaluate(name, grader, generated, 1) for name, grader in graders().items()]
    meta = {
        "n": len(corpus),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "repeats": args.repeats,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": results, "generated_gsm_symbolic": generated_results}
    (args.out / "graders.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False))
    table = markdown(results, meta)
    table += (
        f"\nGenerated check: {len(generated)} cases from reasoning-gym gsm_symbolic chains of thought (verdicts by "
        "construction; accuracy only).\n\n| grader | accuracy |\n|---|---:|\n"
    )
    for r in generated_results:
        table += f"| {r['grader']} | {100 * r['accuracy']:.1f} % ({r['correct']}/{r['n']}) |\n"
    categories = list(generated_results[0]["per_category"])
    table += "\n| case | n | " + " | ".join(r["grader"] for r in generated_results) + " |\n"
    table += "|---|---:|" + "---:|" * len(generated_results) + "\n"
    for cat in categories:
        n = generated_results[0]["per_category"][cat]["n"]
        cells = [f"{100 * r['per_category'][cat]['correct'] / n:.0f} %" for r in generated_results]
        table += f"| {cat} | {n} | " + " | ".join(cells) + " |\n"
    (args.out / "graders.md").write_text(table)
    print(table)
    if args.show_errors:
        for r in results:
            print(f"\n## {r['grader']}: {len(r['errors'])} wrong")
            for e in r["errors"]:
                print(f"  [{e['category']}] out={e['output']!r} ref={e['reference'][:60]!r} verdict={e['verdict']} reward={e['reward']}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
