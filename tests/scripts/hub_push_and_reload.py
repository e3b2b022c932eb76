"""For each run of ``ARGS["runs"]`` (``{name: {"output_dir", "repo_id", "lora"?, "hub_strategy"?}}``), in one
interpreter: train (tests/scripts/hub_generic_trainer.py), push, then download by repo id into a fresh cache and
compare the logits, the greedy continuation, the tokenizer, the generation config and the card; ``RESULT[name]``.
With ``ARGS["refused"]`` (``{"output_dir", "repo_id"}``), also the error of a trainer whose token the Hub refuses,
``RESULT["refused"]`` (tests/test_hub_push.py)."""

import torch
from hub_common import ARGS, PROBE, RESULT, finish, local_tree, probe_outputs
from hub_generic_trainer import build_trainer, refused_message
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.utils._runtime import is_xet_available
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig


def push_and_reload(run):
    result = {}
    trainer, tok = build_trainer(run)
    trainer.train()
    before_logits, before_gen = probe_outputs(trainer.model, tok)
    result["local_files"] = local_tree(run["output_dir"])
    info = trainer.push_to_hub(dataset_name="reasoning-gym/chain_sum")
    result["commit"] = info.oid
    result["xet_available"] = is_xet_available()

    # Download back as a stranger would: fresh cache (HF_HOME holds nothing of this repo), repo id only.
    snapshot = snapshot_download(run["repo_id"])
    result["downloaded"] = local_tree(snapshot)
    if run.get("lora"):
        from peft import AutoPeftModelForCausalLM
        reloaded = AutoPeftModelForCausalLM.from_pretrained(run["repo_id"])
        result["adapter_base"] = reloaded.peft_config["default"].base_model_name_or_path
    else:
        reloaded = AutoModelForCausalLM.from_pretrained(run["repo_id"])
    tok2 = AutoTokenizer.from_pretrained(run["repo_id"])
    after_logits, after_gen = probe_outputs(reloaded, tok2)
    result["logits_equal"] = bool(torch.equal(before_logits, after_logits))
    result["max_abs_diff"] = float((before_logits - after_logits).abs().max())
    result["generated_before"], result["generated_after"] = before_gen, after_gen
    result["tokenizer_same"] = tok2(PROBE)["input_ids"] == tok(PROBE)["input_ids"]
    result["generation_eos"] = GenerationConfig.from_pretrained(run["repo_id"]).eos_token_id
    card = ModelCard.load(run["repo_id"])
    result["card_base_model"] = card.data.base_model
    result["card_library"] = card.data.library_name
    return result


for name, run in ARGS["runs"].items():
    RESULT[name] = push_and_reload(run)
if "refused" in ARGS:
    RESULT["refused"] = refused_message(ARGS["refused"])
finish()
