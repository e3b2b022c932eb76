"""A plain ``transformers.Trainer`` with trl_ext's Hub push and model card (``HubPushMixin``, ``ModelCardMixin``),
for the Hub scripts of tests/test_hub_push.py: :func:`build_trainer` trains the tiny base from the loopback Hub."""

from __future__ import annotations

from datasets import Dataset
from hub_common import ARGS, publish_base_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from trl_ext.hub import HubPushMixin
from trl_ext.model_card import ModelCardMixin


class PushTrainer(HubPushMixin, ModelCardMixin, Trainer):
    _card_template = "_base.md"
    _card_trainer_name = "PushTestTrainer"
    _card_tags = ("push-test",)
    _card_plot_keys = ("loss", "grad_norm")


def build_trainer(run=None, save_strategy="steps"):
    """(trainer, tokenizer): 2 steps on 4 sums into ``run["output_dir"]``, pushing to ``run["repo_id"]`` with
    ``run["hub_strategy"]`` (default every_save), LoRA when ``run["lora"]``; ``run`` defaults to ``ARGS``."""
    run = ARGS if run is None else run
    publish_base_model()
    tok = AutoTokenizer.from_pretrained(ARGS["base_repo"])
    model = AutoModelForCausalLM.from_pretrained(ARGS["base_repo"])
    if run.get("lora"):
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM", init_lora_weights=False))
    enc = tok(["2 + 3 = 5", "1 + 1 = 2", "4 + 4 = 8", "3 + 6 = 9"])
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "labels": enc["input_ids"]})
    args = TrainingArguments(run["output_dir"], max_steps=2, per_device_train_batch_size=1, learning_rate=1e-2,
                             logging_steps=1, report_to="none", use_cpu=True, save_strategy=save_strategy,
                             save_steps=1, push_to_hub=True, hub_model_id=run["repo_id"], disable_tqdm=True,
                             hub_strategy=run.get("hub_strategy", "every_save"))
    return PushTrainer(model=model, args=args, train_dataset=ds, processing_class=tok), tok


def refused_message(run):
    """The HubPushError message of a PushTrainer built with a token the Hub refuses (``hf_bad``, pushing to
    ``run["repo_id"]``): raised when the repo is created, before any training step; None if nothing was raised."""
    from trl_ext.hub import HubPushError

    publish_base_model()
    model = AutoModelForCausalLM.from_pretrained(ARGS["base_repo"])
    args = TrainingArguments(run["output_dir"], max_steps=1, report_to="none", use_cpu=True, push_to_hub=True,
                             hub_model_id=run["repo_id"], hub_token="hf_bad")
    try:
        PushTrainer(model=model, args=args)
    except HubPushError as err:
        return str(err)
    return None
