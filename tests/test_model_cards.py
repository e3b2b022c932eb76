"""A trl_ext model card in the output folder of every trainer, full fine-tuning and LoRA (tiny model, max_steps=1).

The card is written when training ends and by ``save_model`` (after PEFT's placeholder ``README.md``), has one
"Framework versions" section, names a local base model as text (never a dangling link), lists the trainer's key
metrics, and carries held-out results as ``model-index`` in its YAML front matter.
"""

import json
import math
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from trl_ext.model_card import base_model_markdown, dumps_strict_json, final_metrics, strict_json

from helpers import PROMPTS, char_variety, prompt_dataset, run_args

EVAL = [{"metric_name": "held-out answer accuracy", "metric_type": "accuracy", "metric_value": 0.25,
         "dataset_name": "org/heldout-set", "dataset_split": "test"}]


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text.split("---\n")[1])


def _lora(task_type=None):
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type=task_type)


def _common(out):
    return run_args(out)


def _rft(model, out, peft):
    from trl_ext.trainers.rft import RFTConfig, RFTTrainer

    ds = prompt_dataset(1)
    return RFTTrainer(model=model, reward_funcs=char_variety,
                      train_dataset=ds, peft_config=_lora() if peft else None,
                      args=RFTConfig(**_common(out), num_generations=2, max_completion_length=6))


def _process_grpo(model, out, peft):
    from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer

    ds = prompt_dataset(1)
    return ProcessGRPOTrainer(model=model, reward_funcs=char_variety,
                              train_dataset=ds, peft_config=_lora() if peft else None,
                              args=ProcessGRPOConfig(**_common(out), num_generations=2, max_completion_length=6))


def _unified(model, out, peft):
    from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

    ds = Dataset.from_dict({"prompt": PROMPTS, "chosen": [" 4", " 15", " 15", " 6"],
                            "rejected": [" 5", " 7", " 8", " 5"]})
    args = UnifiedLikelihoodConfig(**_common(out), loss_type=["sft", "sigmoid"], gradient_checkpointing=False,
                                   dataloader_pin_memory=False)
    return UnifiedLikelihoodTrainer(model, args=args, train_dataset=ds, peft_config=_lora() if peft else None)


def _prm(model, out, peft):
    from trl_ext.trainers.prm import PRMConfig, PRMTrainer

    ds = Dataset.from_dict({"prompt": ["What is 2+3?"] * 4, "completions": [["2+3=5", "#### 5"]] * 4,
                            "labels": [[True, False]] * 4})
    return PRMTrainer(model, args=PRMConfig(**_common(out)), train_dataset=ds,
                      peft_config=_lora("TOKEN_CLS") if peft else None)


TRAINERS = {"rft": (_rft, "rft", ("reward", "vf_loss", "kl", "explained_variance")),
            "process_grpo": (_process_grpo, "process-supervision", ("reward",)),
            "unified": (_unified, "unified-likelihood", ("loss",)),
            "prm": (_prm, "process-reward-model", ("train_loss",))}


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("name", list(TRAINERS))
def test_every_trainer_writes_a_trl_ext_card_in_its_output_folder(tiny_model_path, tmp_path, name, peft):
    build, tag, key_metrics = TRAINERS[name]
    out = tmp_path / "out"
    trainer = build(tiny_model_path, out, peft)
    trainer.train()
    card = (out / "README.md").read_text()
    assert "trl_ext" in card and "## Final metrics" in card  # written when train() ends, before any save

    trainer.card_eval_results = EVAL
    trainer.save_model()  # PEFT writes its placeholder README.md here first; ours replaces it
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert "More Information Needed" not in card and "Model Card for Model ID" not in card
    assert card.count("Framework versions") == 1
    assert tag in meta["tags"] and "trl-ext" in meta["tags"] and ("peft" in meta["tags"]) == peft
    assert meta["library_name"] == ("peft" if peft else "transformers")
    assert "base_model" not in meta  # the tiny model is a local folder: no invented Hub id
    assert "](#base-model)" not in card and f"the local model `{Path(tiny_model_path).name}`" in card
    assert ("This folder holds a PEFT adapter only" in card) == peft
    if peft:
        assert str(Path(tiny_model_path)) in card  # says where the local base is and how to load the adapter
    (result,) = meta["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == 0.25 and result["metrics"][0]["type"] == "accuracy"
    assert result["dataset"]["name"] == "org/heldout-set" and result["dataset"]["split"] == "test"
    assert "| held-out answer accuracy | org/heldout-set | 0.25 |" in card
    metrics_section = card.split("## Final metrics")[1].split("##")[0]
    for key in key_metrics:
        assert f"| `{key}` |" in metrics_section, (key, metrics_section)


def test_final_metrics_follow_the_trainers_key_order_not_the_alphabet():
    history = [{"step": 1, "aaa": 1.0, "reward": 0.5, "rewards/g/mean": 0.5, "vf_loss": 2.0, "zzz": 3.0},
               {"step": 2, "reward": 0.75, "kl": float("nan"), "abc": 9.0}]
    assert final_metrics(history, ("reward", "rewards/*", "vf_loss", "kl")) == {
        "reward": "0.75", "rewards/g/mean": "0.5", "vf_loss": "2"}  # kl never finite: no row; aaa/abc/zzz not chosen
    assert list(final_metrics(history, ("zzz", "a*"), limit=2)) == ["zzz", "aaa"]


def test_base_model_markdown_links_hub_ids_and_names_local_folders(tmp_path):
    (tmp_path / "tiny").mkdir()
    assert base_model_markdown("org/model") == "[org/model](https://huggingface.co/org/model)"
    assert base_model_markdown(str(tmp_path / "tiny")) == "the local model `tiny` (not on the Hub)"


def test_results_files_are_strict_json():
    value = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 0.5}
    assert strict_json(value) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 0.5}
    text = dumps_strict_json(value)
    assert "NaN" not in text and "Infinity" not in text and json.loads(text)["e"] == 0.5
    with pytest.raises(ValueError):  # what the CLI scripts wrote before: not strict JSON
        json.dumps({"a": math.nan}, allow_nan=False)


@pytest.mark.parametrize("name", ["rft", "prm"])
def test_lora_checkpoint_folders_get_the_trl_ext_card_not_peft_placeholder(tiny_model_path, tmp_path, name):
    build = TRAINERS[name][0]
    out = tmp_path / "out"
    trainer = build(tiny_model_path, out, True)
    trainer.args.save_strategy = "steps"
    trainer.args.save_steps = 1
    trainer.train()
    card = (out / "checkpoint-1" / "README.md").read_text()
    assert (out / "checkpoint-1" / "adapter_model.safetensors").is_file()  # PEFT saved here (and its README.md)
    assert "More Information Needed" not in card and card.count("Framework versions") == 1
    assert "trl-ext" in _front_matter(card)["tags"]


@pytest.mark.parametrize("use_peft", ["false", "true"])
def test_rft_command_card_has_held_out_model_index_and_strict_json_summary(tiny_model_path, tmp_path, use_peft):
    from trl_ext.cli.scripts.rft import main as rft_main, make_parser

    out = tmp_path / "out"
    args = make_parser().parse_args_and_config([
        "--model_name_or_path", tiny_model_path, "--output_dir", str(out), "--max_steps", "1", "--logging_steps", "1",
        "--per_device_train_batch_size", "2", "--max_completion_length", "6", "--eval_max_new_tokens", "6",
        "--eval_size", "2", "--train_size", "4", "--use_peft", use_peft, "--report_to", "none"])
    summary = rft_main(*args)
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert "More Information Needed" not in card and card.count("Framework versions") == 1
    (result,) = meta["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == pytest.approx(summary["accuracy_after"])
    assert result["metrics"][0]["name"] == "held-out answer accuracy"
    assert meta["library_name"] == ("peft" if use_peft == "true" else "transformers")
    json.loads((out / "rft_summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
