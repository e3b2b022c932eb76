"""What ``trl-ext rft --push_to_hub ...`` runs (LoRA, its default), then a stranger's download by repo id: the adapter
on its base, the policy + critic loader, the value head, compared with the local output folder
(tests/test_hub_push.py)."""

import hashlib
from pathlib import Path

import torch
from hub_common import ARGS, RESULT, finish, local_tree, probe_outputs, publish_base_model
from huggingface_hub import snapshot_download
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_ext.cli.scripts.rft import main as rft_main, make_parser
from trl_ext.models.value_head import ValueHead, load_policy_and_value_head

publish_base_model()
parsed = make_parser().parse_args_and_config([
    "--model_name_or_path", ARGS["base_repo"], "--output_dir", ARGS["output_dir"], "--max_steps", "1",
    "--warmup_steps", "0", "--per_device_train_batch_size", "2", "--max_completion_length", "6",
    "--eval_max_new_tokens", "6", "--eval_size", "2", "--train_size", "4", "--use_peft", "true", "--lora_r", "4",
    "--lora_target_modules", "q_proj", "v_proj", "--push_to_hub", "true", "--hub_model_id", ARGS["repo_id"],
    "--report_to", "none", "--disable_tqdm", "true"])
RESULT["summary"] = rft_main(*parsed)

# A stranger, by repo id only (fresh HF_HOME): download, the adapter on its base, the policy + critic loader
RESULT["downloaded"] = local_tree(snapshot_download(ARGS["repo_id"]))
tok = AutoTokenizer.from_pretrained(ARGS["repo_id"])
base_logits, _ = probe_outputs(AutoModelForCausalLM.from_pretrained(ARGS["base_repo"]), tok)
hub_logits, _ = probe_outputs(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ARGS["base_repo"]),
                                                        ARGS["repo_id"]), tok)
local_logits, _ = probe_outputs(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ARGS["base_repo"]),
                                                          ARGS["output_dir"]), tok)
RESULT["adapter_equals_local"] = bool(torch.equal(hub_logits, local_logits))
RESULT["adapter_changes_base"] = float((hub_logits - base_logits).abs().max())
policy, value_head = load_policy_and_value_head(ARGS["repo_id"])
RESULT["policy_type"] = type(policy).__name__
RESULT["policy_equals_local"] = bool(torch.equal(probe_outputs(policy, tok)[0], local_logits))
local_head = ValueHead.from_pretrained(ARGS["output_dir"])
RESULT["value_head_equals_local"] = all(torch.equal(a, b) for a, b in zip(value_head.state_dict().values(),
                                                                          local_head.state_dict().values()))
RESULT["local_sha256"] = {name: hashlib.sha256(Path(ARGS["output_dir"], name).read_bytes()).hexdigest()
                          for name in ("adapter_model.safetensors", "value_head.safetensors", "README.md")}
finish()
