"""PRMTrainer: labels on exactly the tokens ProcessRewardModel reads (hand-checked, with truncation), PRM metrics,
bad input, learning, LoRA / QLoRA, the trained PRM inside ProcessGRPOTrainer, model card and Hub push."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_ext.core.prm_metrics import first_error_index, prm_metrics, scores_to_predictions, token_level_to_steps
from trl_ext.rewards.process import ProcessRewardModel
from trl_ext.trainers.prm import PRMConfig, PRMTrainer, tokenize_step_row

from helpers import nf4_config, train_quantized

# ----------------------------------------------------------------------------------------------------------------------
# The hand-checked example. SmolLM2's tokenizer (decoded token by token):
#   "What is 2+3?" -> [1780 'What', 314 ' is', 216 ' ', 34 '2', 27 '+', 35 '3', 47 '?']
#   "2+3=5"        -> [34 '2', 27 '+', 35 '3', 45 '=', 37 '5']
#   "#### 5"       -> [1229 '####', 216 ' ', 37 '5']
#   "\n"           -> [198]          BOS = 1
# Layout: [bos] prompt | step_1 sep | step_2 sep, label of step j on its separator.
# ----------------------------------------------------------------------------------------------------------------------

PROMPT = "What is 2+3?"
STEPS = ["2+3=5", "#### 5"]
LABELS = [True, False]
PROMPT_IDS = [1, 1780, 314, 216, 34, 27, 35, 47]
STEP1 = [34, 27, 35, 45, 37, 198]
STEP2 = [1229, 216, 37, 198]
X = -100


def _args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, logging_steps=1,
                  learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
                  disable_tqdm=True)
    kwargs.update(overrides)
    return PRMConfig(**kwargs)


def _rows(n=1, prompt=PROMPT, steps=STEPS, labels=LABELS):
    return Dataset.from_dict({"prompt": [prompt] * n, "completions": [steps] * n, "labels": [labels] * n})


def _tiny_prm_model(tokenizer, seed=0):
    from transformers import LlamaForTokenClassification

    from trl_ext.models.tiny import tiny_config

    torch.manual_seed(seed)
    return LlamaForTokenClassification(tiny_config(num_labels=2, id2label={0: "incorrect", 1: "correct"},
                                                   label2id={"incorrect": 0, "correct": 1}))


def _labelled_positions(labels):
    return [(i, y) for i, y in enumerate(labels) if y != X]


@pytest.mark.parametrize(
    "options, input_ids, labels",
    [
        ({}, PROMPT_IDS + STEP1 + STEP2, [X] * 13 + [1] + [X] * 3 + [0]),
        # 18 > 16: the prompt is cut from the left to 16 - 10 = 6 tokens; both steps keep their label
        ({"max_length": 16}, PROMPT_IDS[2:] + STEP1 + STEP2, [X] * 11 + [1] + [X] * 3 + [0]),
        # the prompt shrinks to 1 token, then the sequence is cut inside step 2: step 2 carries no label
        ({"max_length": 8}, [47] + STEP1 + [1229], [X] * 6 + [1] + [X]),
        # the cut falls right after step 1's separator: step 1 keeps its label
        ({"max_length": 7}, [47] + STEP1, [X] * 6 + [1]),
        ({"max_completion_length": 9}, PROMPT_IDS + STEP1 + STEP2[:3], [X] * 13 + [1] + [X] * 3),
        ({"max_prompt_length": 3}, [27, 35, 47] + STEP1 + STEP2, [X] * 8 + [1] + [X] * 3 + [0]),
        ({"train_on_last_step_only": True}, PROMPT_IDS + STEP1 + STEP2, [X] * 17 + [0]),
    ],
)
def test_labels_land_on_the_separator_hand_checked(tokenizer, options, input_ids, labels):
    out = tokenize_step_row(PROMPT, STEPS, LABELS, tokenizer, [198], **options)
    assert out["input_ids"] == input_ids
    assert out["labels"] == labels
    # the labelled tokens are the step separators
    assert all(out["input_ids"][i] == 198 for i, _ in _labelled_positions(out["labels"]))


def test_a_cut_separator_leaves_no_label(tokenizer):
    out = tokenize_step_row(PROMPT, STEPS, LABELS, tokenizer, [198], max_length=6)  # [47] + step 1 without "\n"
    assert out["input_ids"] == [47, 34, 27, 35, 45, 37]
    assert out["labels"] == [X] * 6


@pytest.mark.parametrize("max_length", [None, 30, 16, 12, 8, 7, 3])
def test_labels_sit_where_process_reward_model_reads(tokenizer, max_length):
    """ProcessRewardModel (independent code) reads step scores at exactly the labelled tokens, on the same ids."""
    steps = ["Tom has 3 apples and buys 4: 3+4=7.", "He eats 2, so 7-2=5 are left.", "#### 5"]
    prompt = "Tom has 3 apples. He buys 4 and eats 2. How many are left?\n"
    prm = ProcessRewardModel(_tiny_prm_model(tokenizer), tokenizer, step_separator="\n", max_length=max_length)
    ids, positions = prm._encode(prompt, steps)
    out = tokenize_step_row(prompt, steps, [True, True, False], tokenizer, [198], max_length=max_length)
    assert out["input_ids"] == ids
    expected = [(p, y) for p, y in zip(positions, [1, 1, 0]) if p is not None]
    assert _labelled_positions(out["labels"]) == expected


def test_conversational_prompt_reads_the_last_user_message(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    assert tokenize_step_row(messages, STEPS, LABELS, tokenizer, [198]) == tokenize_step_row(
        PROMPT, STEPS, LABELS, tokenizer, [198])


def test_trainer_datasets_carry_the_hand_checked_labels(tiny_model_path, tmp_path):
    conversational = [{"role": "user", "content": PROMPT}]
    train = Dataset.from_dict({"prompt": [PROMPT, PROMPT], "completions": [STEPS, ["2+3=5"]],
                               "labels": [LABELS, [True]]})
    evals = Dataset.from_dict({"prompt": [conversational], "completions": [STEPS], "labels": [LABELS]})
    trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, max_length=16, train_on_last_step_only=True),
                         train_dataset=train, eval_dataset=evals)
    assert trainer.train_dataset[0] == {"input_ids": PROMPT_IDS[2:] + STEP1 + STEP2,
                                        "labels": [X] * 11 + [X] + [X] * 3 + [0]}
    assert trainer.train_dataset[1] == {"input_ids": PROMPT_IDS + STEP1, "labels": [X] * 13 + [1]}
    # evaluation labels every step, even with train_on_last_step_only
    assert trainer.eval_dataset[0]["labels"] == [X] * 11 + [1] + [X] * 3 + [0]
    assert trainer.model.config.id2label == {0: "incorrect", 1: "correct"}


def test_rows_without_a_label_after_truncation_are_dropped(tiny_model_path, tmp_path):
    train = Dataset.from_dict({"prompt": [PROMPT, "Hi"], "completions": [STEPS, ["1"]], "labels": [LABELS, [True]]})
    with pytest.warns(UserWarning, match=r"1 row\(s\) of the train dataset keep no step label.*rows \[0\]"):
        trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, max_length=6), train_dataset=train)
    assert len(trainer.train_dataset) == 1


# ----------------------------------------------------------------------------------------------------------------------
# Metrics (hand-computed)
# ----------------------------------------------------------------------------------------------------------------------


def test_prm_metrics_hand_computed():
    labels = [[True, True, False, False], [True, True], [True, False], [False]]
    preds = [[True, False, False, True], [True, True], [True, False], [True]]
    m = prm_metrics(preds, labels)
    # 9 steps; wrong: s0j1 (FP), s0j3 (FN), s3j0 (FN) -> 6/9 right; TP = s0j2, s2j1 = 2
    assert m["step_accuracy"] == pytest.approx(6 / 9)
    assert m["incorrect_precision"] == pytest.approx(2 / 3)  # predicted incorrect: s0j1, s0j2, s2j1
    assert m["incorrect_recall"] == pytest.approx(2 / 4)  # incorrect: s0j2, s0j3, s2j1, s3j0
    assert m["incorrect_f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # first errors: true (2, -1, 1, 0), predicted (1, -1, 1, -1) -> hits on solutions 1 and 2
    assert m["first_error_accuracy"] == 0.5
    assert m["first_error_accuracy_erroneous"] == pytest.approx(1 / 3)
    assert m["first_error_accuracy_correct"] == 1.0
    assert m["first_error_f1"] == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert (m["num_steps"], m["num_solutions"]) == (9.0, 4.0)


def test_prm_metrics_undefined_ratios_are_nan():
    m = prm_metrics([[True, True]], [[True, True]])
    assert m["step_accuracy"] == 1.0 and m["first_error_accuracy"] == 1.0
    assert math.isnan(m["incorrect_precision"]) and math.isnan(m["incorrect_recall"])
    assert math.isnan(m["first_error_accuracy_erroneous"]) and math.isnan(m["first_error_f1"])
    with pytest.raises(ValueError, match="solution 0 has 1 predictions but 2 labels"):
        prm_metrics([[True]], [[True, False]])


def test_metric_helpers():
    assert first_error_index([]) == -1 and first_error_index([False]) == 0
    assert scores_to_predictions([[0.5, 0.49, None]]) == [[True, False, True]]
    assert scores_to_predictions([[None]], none_is_correct=False) == [[False]]
    scores = np.array([[0.9, 0.2, 0.7, -100.0], [0.1, 0.4, -100.0, -100.0]])
    labels = np.array([[X, 1, 0, X], [0, X, X, X]])
    assert token_level_to_steps(scores, labels) == ([[0.2, 0.7], [0.1]], [[True, False], [False]])


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: one clear error naming the row, before training
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, message",
    [
        ({"completions": ["a", "b"], "labels": [True]}, r"row 1 of the train dataset: 'labels' has 1 entries but "
                                                         r"'completions' has 2 steps"),
        ({"completions": ["a", "b"], "labels": [1, 0]}, r"row 1 of the train dataset: labels\[0\] is 1 \(int\); "
                                                         "labels must be booleans"),
        ({"completions": [], "labels": []}, r"row 1 of the train dataset: 'completions' is an empty list"),
        ({"completions": ["a", 3], "labels": [True, True]}, r"row 1 of the train dataset: completions\[1\] must be a "
                                                              "string"),
    ],
)
def test_bad_rows_are_named(tiny_model_path, tmp_path, row, message):
    good = {"prompt": "p", "completions": ["x"], "labels": [True]}
    with pytest.raises(ValueError, match=message):
        PRMTrainer(tiny_model_path, args=_args(tmp_path), train_dataset=_ListDataset([good, {"prompt": "q", **row}]))


class _ListDataset:
    """Rows with mixed types that Arrow would coerce (ints next to bools): checked before conversion."""

    def __init__(self, rows):
        self.rows = rows
        self.column_names = list(rows[0])

    def select_columns(self, columns):
        return [{c: r[c] for c in columns} for r in self.rows]


def test_int_labels_in_an_arrow_dataset_are_rejected(tiny_model_path, tmp_path):
    dataset = Dataset.from_dict({"prompt": ["p"], "completions": [["a", "b"]], "labels": [[1, 0]]})
    with pytest.raises(ValueError, match=r"row 0 of the train dataset: labels\[0\] is 1"):
        PRMTrainer(tiny_model_path, args=_args(tmp_path), train_dataset=dataset)


def test_missing_column_and_eval_rows_are_named(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match=r"the train dataset has no \['labels'\] column"):
        PRMTrainer(tiny_model_path, args=_args(tmp_path),
                   train_dataset=Dataset.from_dict({"prompt": ["p"], "completions": [["a"]]}))
    with pytest.raises(ValueError, match="row 0 of the eval dataset: 'completions' is an empty list"):
        PRMTrainer(tiny_model_path, args=_args(tmp_path), train_dataset=_rows(),
                   eval_dataset=Dataset.from_dict({"prompt": ["p"], "completions": [[]], "labels": [[]]}))


def test_separator_missing_from_vocabulary_is_an_error(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForTokenClassification, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "a": 2, "b": 3, "|": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    model = LlamaForTokenClassification(LlamaConfig(vocab_size=5, hidden_size=16, intermediate_size=32,
                                                    num_hidden_layers=1, num_attention_heads=2, num_labels=2))
    rows = Dataset.from_dict({"prompt": ["a"], "completions": [["a b"]], "labels": [[True]]})
    for separator in ("§", "\n"):  # the unknown token / no token at all
        with pytest.raises(ValueError, match="step separator .* is missing from the tokenizer's vocabulary"):
            PRMTrainer(model, args=_args(tmp_path, step_separator=separator), train_dataset=rows,
                       processing_class=tok)
    trainer = PRMTrainer(model, args=_args(tmp_path, step_separator="|"), train_dataset=rows, processing_class=tok)
    # prompt "a" (no BOS in this tokenizer) | step "a b" + "|": the label on "|"
    assert trainer.train_dataset[0] == {"input_ids": [2, 2, 3, 4], "labels": [X, X, X, 1]}


def test_saved_prm_is_scored_with_the_separator_it_was_trained_on(tiny_model_path, tmp_path):
    """The separator goes into the PRM's config.json; ProcessRewardModel(folder) uses it unless told otherwise."""
    trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, step_separator="\n\n", max_steps=1),
                         train_dataset=_rows(4))
    trainer.save_model(str(tmp_path / "prm"))
    prm = ProcessRewardModel(str(tmp_path / "prm"))
    assert prm.step_separator == "\n\n"
    assert ProcessRewardModel(str(tmp_path / "prm"), step_separator="\n").step_separator == "\n"
    ids, _ = prm._encode("1+1?", ["1+1=2", "#### 2"])
    assert prm.tokenizer.decode(ids).endswith("1+1=2\n\n#### 2\n\n")


def test_multi_token_separator_warns(tiny_model_path, tmp_path, tokenizer):
    with pytest.warns(UserWarning, match="multi-token separator"):
        trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, step_separator=" ки"), train_dataset=_rows())
    ids = tokenizer(" ки", add_special_tokens=False)["input_ids"]
    row = trainer.train_dataset[0]
    assert len(ids) == 2 and [row["input_ids"][i] for i, _ in _labelled_positions(row["labels"])] == [ids[-1]] * 2


def test_bad_config_and_model():
    with pytest.raises(ValueError, match="max_length must be a positive int"):
        PRMConfig("out", max_length=0)
    with pytest.raises(ValueError, match="step_separator must be a non-empty string"):
        PRMConfig("out", step_separator="")


def test_quantized_model_without_peft_is_refused(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="quantized .* pass a `peft_config`"):
        PRMTrainer(tiny_model_path, args=_args(tmp_path, model_init_kwargs={"device_map": "cpu"}),
                   train_dataset=_rows(), quantization_config=nf4_config())


# ----------------------------------------------------------------------------------------------------------------------
# Training, evaluation, PEFT
# ----------------------------------------------------------------------------------------------------------------------


def _word_dataset(n, seed):
    """Steps labelled by the word they contain: 'right' = correct, 'wrong' = incorrect (learnable by a tiny model)."""
    rng = np.random.default_rng(seed)
    rows = {"prompt": [], "completions": [], "labels": []}
    for _ in range(n):
        k = int(rng.integers(1, 4))
        labels = [bool(rng.random() < 0.6) for _ in range(k)]
        rows["prompt"].append(f"Check {int(rng.integers(100))}.")
        rows["completions"].append([f"step {j} is {'right' if y else 'wrong'}" for j, y in enumerate(labels)])
        rows["labels"].append(labels)
    return Dataset.from_dict(rows)


def test_trains_and_reports_prm_metrics(tiny_model_path, tmp_path, tokenizer):
    train, held_out = _word_dataset(64, seed=0), _word_dataset(16, seed=1)
    trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, max_steps=30, learning_rate=3e-3,
                                                     per_device_train_batch_size=8),
                         train_dataset=train, eval_dataset=held_out)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"]
    assert after["eval_step_accuracy"] == 1.0 and after["eval_first_error_accuracy"] == 1.0
    assert after["eval_num_steps"] == sum(len(x) for x in held_out["labels"])
    # the same model read through ProcessRewardModel (its own encoding) gives the same decisions
    prm = ProcessRewardModel(trainer.model, tokenizer, step_separator="\n")
    scores = prm(prompts=held_out["prompt"], steps=held_out["completions"])
    for row_scores, row_labels in zip(scores, held_out["labels"]):
        assert [s >= 0.5 for s in row_scores] == row_labels


def test_eval_metrics_match_scores_read_by_process_reward_model(tiny_model_path, tmp_path, tokenizer):
    held_out = _word_dataset(12, seed=2)
    trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path), eval_dataset=held_out)
    metrics = trainer.evaluate()
    scores = ProcessRewardModel(trainer.model, tokenizer, step_separator="\n")(
        prompts=held_out["prompt"], steps=held_out["completions"])
    flat = [(s >= 0.5) == y for row_s, row_y in zip(scores, held_out["labels"]) for s, y in zip(row_s, row_y)]
    assert metrics["eval_step_accuracy"] == pytest.approx(sum(flat) / len(flat))


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def _assert_only_adapter_and_head_train(trainer, before):
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable), sorted(trainable)
    assert any("score" in n for n in trainable)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert any("lora_B" in n for n in changed) and any("score" in n for n in changed)
    assert changed <= trainable, sorted(changed - trainable)


def test_lora_trains_only_adapter_and_score_head(tiny_model_path, tmp_path):
    trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, max_steps=3, learning_rate=1e-2),
                         train_dataset=_word_dataset(16, 0), peft_config=_lora_config())
    assert trainer.model.peft_config["default"].task_type == "TOKEN_CLS"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    _assert_only_adapter_and_head_train(trainer, before)


def test_qlora_4bit_cpu_trains(tiny_model_path, tmp_path):
    trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, max_steps=3, learning_rate=1e-2,
                                                     model_init_kwargs={"device_map": "cpu"}),
                         train_dataset=_word_dataset(16, 0), peft_config=_lora_config(),
                         quantization_config=nf4_config())
    train_quantized(trainer, _assert_only_adapter_and_head_train)


# ----------------------------------------------------------------------------------------------------------------------
# The trained PRM inside ProcessGRPOTrainer; model card
# ----------------------------------------------------------------------------------------------------------------------


def test_trained_prm_scores_steps_inside_process_grpo(tiny_model_path, tmp_path, tokenizer):
    from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer

    trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, max_steps=20, learning_rate=3e-3,
                                                     per_device_train_batch_size=8),
                         train_dataset=_word_dataset(64, 0))
    trainer.train()
    folder = tmp_path / "prm"
    trainer.save_model(str(folder))
    prm = ProcessRewardModel(str(folder))  # defaults: separator "\n", the 'correct' label found by name
    assert prm.correct_index == 1
    steps = [["step 0 is right", "step 1 is wrong"]]
    local = ProcessRewardModel(trainer.model, tokenizer)(prompts=["Check 3."], steps=steps)
    assert prm(prompts=["Check 3."], steps=steps)[0] == pytest.approx(local[0], abs=1e-5)
    assert local[0][0] > 0.5 > local[0][1]

    prompts = ["What is 2+2?", "Compute 3*5.", "Add 7 and 8.", "What is 10-4?"] * 4
    grpo = ProcessGRPOTrainer(
        model=tiny_model_path, process_reward_funcs=[prm], train_dataset=Dataset.from_dict({"prompt": prompts}),
        args=ProcessGRPOConfig(output_dir=str(tmp_path / "grpo"), num_generations=4, per_device_train_batch_size=4,
                               max_completion_length=12, max_steps=2, logging_steps=1, learning_rate=1e-3,
                               report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
                               disable_tqdm=True, step_separator=" "),
    )
    grpo.train()
    logs = [e for e in grpo.state.log_history if "process/prm/mean" in e]
    assert len(logs) == 2
    assert all(0.0 < e["process/prm/mean"] < 1.0 and e["process/frac_scored_steps"] == 1.0 for e in logs)


def test_model_card(tiny_model_path, tmp_path):
    trainer = PRMTrainer(tiny_model_path, args=_args(tmp_path, max_steps=1), train_dataset=_word_dataset(8, 0))
    trainer.train()
    trainer.create_model_card(dataset_name="trl_ext step_labelled_dataset")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "pipeline_tag: token-classification" in text and "text-generation" not in text
    assert "**PRMTrainer**" in text and "ProcessRewardModel(model, tokenizer, step_separator='\\n')" in text
    assert "- prm" in text and "None" not in text.split("## Final metrics")[0]


def test_push_to_hub_then_score_from_the_hub(run_hub_script, hub_server, tiny_model_path, tmp_path):
    res = run_hub_script("hub_prm_push", hub_server, {"model_path": tiny_model_path, "output_dir": str(tmp_path / "o")})
    assert res["remote"][0] == pytest.approx(res["local"][0], abs=1e-6)
    assert res["base_model"] == "user/tiny-base" and res["pipeline_tag"] == "token-classification"
    files = set(hub_server.files("user/tiny-prm"))
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= files


# ----------------------------------------------------------------------------------------------------------------------
# The example and the benchmark, end to end on the tiny model (slow: subprocesses)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_example_then_benchmark_run_on_the_tiny_model(tiny_model_path, tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "prm"
    subprocess.run([sys.executable, os.path.join(root, "examples", "prm.py"), "--model_name_or_path", tiny_model_path,
                    "--max_steps", "2", "--train_size", "8", "--eval_size", "4", "--train_top_layers", "1",
                    "--output_dir", str(out)], check=True, env=env, timeout=600, capture_output=True)
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"untrained", "trained", "arithmetic_verifier", "all_correct"}
    for name in ("untrained", "trained", "arithmetic_verifier"):
        assert 0.0 <= results["summary"][name]["step_accuracy"] <= 1.0
    # --train_top_layers 1: only the top layer (of 2), the final norm and the score head train
    from transformers import AutoModelForTokenClassification

    full = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    expected = sum(p.numel() for p in full.model.layers[-1].parameters()) + full.model.norm.weight.numel() + sum(
        p.numel() for p in full.score.parameters())
    assert results["trainable_parameters"] == expected
    assert ProcessRewardModel(str(out)).correct_index == 1
    assert "pipeline_tag: token-classification" in (out / "README.md").read_text()

    bench = tmp_path / "bench"
    for i, name in enumerate(("prm", "verifier", "grpo")):
        cmd = [sys.executable, os.path.join(root, "benchmarks", "bench_prm.py"), "--prm", str(out), "--model",
               tiny_model_path, "--budget_s", "4", "--eval_size", "4", "--eval_max_new_tokens", "8",
               "--max_completion_length", "8", "--only", name, "--output_dir", str(bench)]
        subprocess.run(cmd + (["--measure_before"] if i == 0 else []), check=True, env=env, timeout=600,
                       capture_output=True)
        result = json.loads((bench / f"{name}.json").read_text())
        assert result["steps"] >= 1 and result["train_seconds"] >= 4 and 0.0 <= result["after"]["accuracy"] <= 1.0
        if name == "prm":
            assert all(0.0 < r < 1.0 for r in result["step_reward_mean"] if r is not None)


class _Killed(BaseException):
    """Stands for a SIGKILL inside a save: nothing after the raise runs."""


def test_checkpoints_are_atomic_and_a_finished_run_resumed_does_nothing(tiny_model_path, tmp_path):
    """PRMTrainer shares the other trainers' ResumeMixin: a save killed midway leaves no checkpoint-N (its staging
    folder is removed by the next train()), and resuming a finished run trains nothing."""
    args = _args(tmp_path, save_strategy="steps", save_steps=1, max_steps=2)
    trainer = PRMTrainer(tiny_model_path, args=args, train_dataset=_rows(8))
    original = trainer._save_optimizer_and_scheduler

    def killed_at_step_2(output_dir):
        if trainer.state.global_step == 2:  # the model is written, the optimizer not yet
            raise _Killed()
        original(output_dir)

    trainer._save_optimizer_and_scheduler = killed_at_step_2
    with pytest.raises(_Killed):
        trainer.train()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    (staging,) = [p for p in out.glob("_checkpoint-2.tmp-*")]
    assert not (staging / "trainer_state.json").exists()

    resumed = PRMTrainer(tiny_model_path, args=args, train_dataset=_rows(8))
    with pytest.warns(UserWarning, match=r"removed .*_checkpoint-2\.tmp-.*unfinished checkpoint save"):
        resumed.train(resume_from_checkpoint=True)  # resumes from checkpoint-1
    assert resumed.state.global_step == 2 and not list(out.glob("_checkpoint-*"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    weights = {n: p.detach().clone() for n, p in resumed.model.named_parameters()}
    again = PRMTrainer(tiny_model_path, args=args, train_dataset=_rows(8))
    with pytest.warns(UserWarning, match="finished"):
        again.train(resume_from_checkpoint=True)
    assert again.state.global_step == 2
    for name, value in again.model.named_parameters():
        assert torch.equal(value, weights[name]), name
