"""Greedy held-out evaluation and training-curve plots."""

import pytest
from datasets import Dataset

from trl_ext.evaluation import evaluate_accuracy, generate_completions
from trl_ext.plotting import curves, plot_training_curves


def test_curves_skip_missing_and_non_finite():
    history = [{"step": 1, "reward": 0.5}, {"step": 2, "loss": 1.0}, {"step": 3, "reward": float("nan")},
               {"step": 4, "reward": 1.0}]
    assert curves(history, "reward") == ([1.0, 4.0], [0.5, 1.0])


def test_plot_training_curves_writes_png(tmp_path):
    history = [{"step": s, "reward": s / 10, "kl": s / 100} for s in range(1, 6)]
    path = plot_training_curves(history, tmp_path / "curves.png", ["reward", "kl", "absent"],
                                extra_points={"eval accuracy": [(0, 0.1), (5, 0.4)]})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert plot_training_curves(history, tmp_path / "none.png", ["absent"]) is None
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("conversational", [False, True])
def test_evaluate_accuracy_grades_greedy_completions(tiny_model_path, conversational):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    prompts = ["1 + 1 =", "2 + 2 ="]
    if conversational:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    ds = Dataset.from_dict({"prompt": prompts, "answer": ["2", None]})
    seen = {}

    def grader(prompts, completions, answer, **kwargs):
        seen["completions"], seen["answer"] = completions, answer
        return [1.0 if a is not None else None for a in answer]

    model.train()
    acc, texts = evaluate_accuracy(model, tokenizer, ds, grader, max_new_tokens=4, return_completions=True)
    assert acc == 1.0 and len(texts) == 2  # the None score is skipped, not counted as 0
    assert isinstance(seen["completions"][0], list if conversational else str)
    assert model.training  # the caller's train/eval mode is restored
    assert texts == generate_completions(model, tokenizer, prompts, max_new_tokens=4)  # deterministic (greedy)
    with pytest.raises(ValueError, match="prompt"):
        evaluate_accuracy(model, tokenizer, Dataset.from_dict({"question": ["x"]}), grader)
