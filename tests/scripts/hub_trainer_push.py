"""trl_ext trainers, one after the other (``ARGS["runs"]``: ``{kind: {"output_dir", "repo_id", "lora"?}}``, kind
rft, process_grpo or unified), each trained one step from the tiny base on the loopback Hub, pushed, then reloaded
by running the card's own "How to load" snippet: the logits, the greedy continuation and, for RFT, the values before
and after, in ``RESULT[kind]`` (tests/test_hub_push.py). One interpreter for all of them: the imports are paid
once."""

import re

import torch
from datasets import Dataset
from helpers import PROMPTS, char_variety, prompt_dataset, run_args
from hub_common import ARGS, PROBE, RESULT, finish, probe_outputs, publish_base_model
from huggingface_hub import ModelCard


def build(kind, run):
    common = run_args(run["output_dir"], push_to_hub=True, hub_model_id=run["repo_id"])
    if kind == "rft":
        from trl_ext.trainers.rft import RFTConfig, RFTTrainer
        peft_config = None
        if run.get("lora"):
            from peft import LoraConfig
            peft_config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                     init_lora_weights=False)
        return RFTTrainer(model=ARGS["base_repo"], reward_funcs=char_variety, train_dataset=prompt_dataset(),
                          args=RFTConfig(max_completion_length=8, **common), peft_config=peft_config)
    if kind == "process_grpo":
        from trl_ext.rewards.process import ArithmeticStepVerifier
        from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer
        return ProcessGRPOTrainer(model=ARGS["base_repo"], reward_funcs=[char_variety],
                                  process_reward_funcs=[ArithmeticStepVerifier()], train_dataset=prompt_dataset(),
                                  args=ProcessGRPOConfig(num_generations=4, max_completion_length=8, **common))
    from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer
    data = [Dataset.from_dict({"prompt": PROMPTS, "completion": [" 4", " 15", " 15", " 6"]}),
            Dataset.from_dict({"prompt": PROMPTS, "chosen": [" 4", " 15", " 15", " 6"],
                               "rejected": [" 5", " 8", " 14", " 7"]})]
    args = UnifiedLikelihoodConfig(loss_type=["sft", "sigmoid"], gradient_checkpointing=False,
                                   dataloader_pin_memory=False, **common)
    return UnifiedLikelihoodTrainer(ARGS["base_repo"], args=args, train_dataset=data)


def values(model, value_head, tok):
    enc = tok([PROBE], return_tensors="pt")
    with torch.no_grad():
        return value_head(model(**enc, output_hidden_states=True).hidden_states[-1].float())


def push_and_reload(kind, run):
    result = {}
    trainer = build(kind, run)
    trainer.train()
    tok = trainer.processing_class
    model = trainer.accelerator.unwrap_model(trainer.model)
    before_logits, before_gen = probe_outputs(model, tok)
    if kind == "rft":
        before_values = values(model, trainer.value_head, tok)
    trainer.push_to_hub()

    card = ModelCard.load(run["repo_id"])  # downloaded from the loopback Hub
    snippet = re.search(r"## How to load\s*```python\n(.*?)```", card.text, re.S).group(1)
    result["snippet"] = snippet
    namespace = {}
    exec(snippet, namespace)  # the card's own loading code, as a stranger would run it
    reloaded, tok2 = namespace["model"], namespace["tokenizer"]
    after_logits, after_gen = probe_outputs(reloaded, tok2)
    result["logits_equal"] = bool(torch.equal(before_logits, after_logits))
    result["max_abs_diff"] = float((before_logits - after_logits).abs().max())
    result["generated_before"], result["generated_after"] = before_gen, after_gen
    if kind == "rft":
        after_values = values(reloaded, namespace["value_head"], tok2)
        result["values_equal"] = bool(torch.equal(before_values, after_values))
        result["values_nonzero"] = bool(after_values.abs().sum() > 0)
    return result


publish_base_model()
for kind, run in ARGS["runs"].items():
    RESULT[kind] = push_and_reload(kind, run)
finish()
