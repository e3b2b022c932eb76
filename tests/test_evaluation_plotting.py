"""Greedy held-out evaluation and training-curve plots."""

import pytest
from datasets import Dataset

from trl_ext.evaluation import evaluate_accuracy, generate_completions
from trl_ext.plotting import curves, plot_training_curves

pytestmark = pytest.mark.real_plots  # what is drawn is what these tests check


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


def test_y_limits_of_flat_and_varying_series():
    from trl_ext.plotting import y_limits

    assert y_limits([2.0, 2.0, 2.0]) == (1.5, 2.5)  # flat: v ± max(0.25·|v|, 0.5)
    assert y_limits([10.0, 10.0 + 1e-6]) == pytest.approx((7.5, 12.5))  # rounding noise on a flat loss
    assert y_limits([0.0, 0.0]) == (-0.05, 1.05) and y_limits([0.5]) == (-0.05, 1.05)  # flat inside [0, 1]
    assert y_limits([0.001, 0.003]) is None  # a real (small) trend: autoscaled
    assert y_limits([0.2, 0.4], unit_interval=True) == (-0.05, 1.05) and y_limits([0.2, 1.4], True) is None


def test_curve_figure_reads_at_a_glance():
    from trl_ext.plotting import training_curves_figure

    # a loss around 2.3 with tiny steps: matplotlib would label the axis "+2.3" (an offset) and use 0.5-step ticks
    history = [{"step": s, "loss": 2.3 + s * 1e-4, "reward": 0.5} for s in range(1, 4)]
    history += [{"step": 2, "eval_loss": 2.31}, {"step": 3, "eval_loss": 2.32}]
    fig = training_curves_figure(history, ["loss", "reward"], extra_points={"held-out accuracy": [(0, 0.1), (3, 0.3)]},
                                 title="RFTTrainer on chain_sum")
    assert fig._suptitle.get_text() == "RFTTrainer on chain_sum"
    loss, reward, acc = fig.axes[:3]
    assert [ax.get_title() for ax in (loss, reward, acc)] == ["loss", "reward", "held-out accuracy"]
    assert [line.get_label() for line in loss.get_lines()] == ["train", "eval"]  # eval curve on the loss panel
    assert list(loss.get_lines()[1].get_ydata()) == [2.31, 2.32]
    assert all(line.get_marker() not in (None, "None", "") for ax in fig.axes for line in ax.get_lines())
    for ax in (loss, reward, acc):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert ax.yaxis.get_offset_text().get_text() == "" and ax.xaxis.get_offset_text().get_text() == ""
    assert reward.get_ylim() == (-0.05, 1.05) and acc.get_ylim() == (-0.05, 1.05)  # flat reward, accuracy
    assert training_curves_figure(history, ["absent"]) is None


def test_held_out_generation_shows_a_progress_bar(tiny_model_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    generate_completions(model, tokenizer, ["1 + 1 =", "2 + 2 =", "3 + 3 ="], max_new_tokens=2, batch_size=2)
    err = capsys.readouterr().err
    assert "held-out evaluation" in err and "3/3" in err
    generate_completions(model, tokenizer, ["1 + 1 ="], max_new_tokens=2, progress=None)
    assert "held-out evaluation" not in capsys.readouterr().err
