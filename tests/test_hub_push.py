"""End-to-end ``push_to_hub`` against a loopback Hub-compatible server, with the real ``huggingface_hub`` client.

Each test trains for a couple of steps in a subprocess whose ``HF_ENDPOINT`` is :class:`tests.hub_server.HubServer`,
pushes with ``trainer.push_to_hub()`` (``Trainer.push_to_hub`` -> ``HfApi.upload_folder``), downloads the repo back
with ``snapshot_download`` / ``from_pretrained("user/...")`` and compares the logits with the ones computed before
the push. The pytest process then inspects what the server stored: the files of every commit, the card's YAML
front matter, and the requests the client made.
"""

from __future__ import annotations

import pytest
import yaml

from hub_server import HubServer

# Files that must never reach the Hub unless explicitly asked (hub_strategy="checkpoint"/"all_checkpoints").
FORBIDDEN = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "scaler.pt")

COMMON = '''
import torch
from pathlib import Path
from huggingface_hub import HfApi, snapshot_download

PROBE = "Question: 2 + 3 = ? Answer: 5"

def publish_base_model():
    """Put the tiny model on the loopback Hub so that the trained model's base is a real Hub id."""
    api = HfApi()
    api.create_repo(ARGS["base_repo"], exist_ok=True)
    api.upload_folder(repo_id=ARGS["base_repo"], folder_path=ARGS["model_path"], commit_message="tiny base")

def probe_outputs(model, tok):
    model.eval()
    enc = tok([PROBE], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits.float()
        gen = model.generate(**enc, max_new_tokens=5, do_sample=False)
    return logits, gen[0, enc["input_ids"].shape[1]:].tolist()

def local_tree(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file() and ".cache" not in p.parts)
'''

GENERIC_TRAINER = COMMON + '''
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
from trl_ext.hub import HubPushError, HubPushMixin
from trl_ext.model_card import ModelCardMixin

class PushTrainer(HubPushMixin, ModelCardMixin, Trainer):
    _card_template = "_base.md"
    _card_trainer_name = "PushTestTrainer"
    _card_tags = ("push-test",)
    _card_plot_keys = ("loss", "grad_norm")

def build_trainer(save_strategy="steps"):
    publish_base_model()
    tok = AutoTokenizer.from_pretrained(ARGS["base_repo"])
    model = AutoModelForCausalLM.from_pretrained(ARGS["base_repo"])
    if ARGS.get("lora"):
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM", init_lora_weights=False))
    enc = tok(["2 + 3 = 5", "1 + 1 = 2", "4 + 4 = 8", "3 + 6 = 9"])
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "labels": enc["input_ids"]})
    args = TrainingArguments(ARGS["output_dir"], max_steps=2, per_device_train_batch_size=1, learning_rate=1e-2,
                             logging_steps=1, report_to="none", use_cpu=True, save_strategy=save_strategy,
                             save_steps=1, push_to_hub=True, hub_model_id=ARGS["repo_id"], disable_tqdm=True,
                             hub_strategy=ARGS.get("hub_strategy", "every_save"))
    return PushTrainer(model=model, args=args, train_dataset=ds, processing_class=tok), tok
'''

PUSH_AND_RELOAD = GENERIC_TRAINER + '''
trainer, tok = build_trainer()
trainer.train()
before_logits, before_gen = probe_outputs(trainer.model, tok)
RESULT["local_files"] = local_tree(ARGS["output_dir"])
info = trainer.push_to_hub(dataset_name="reasoning-gym/chain_sum")
RESULT["commit"] = info.oid
from huggingface_hub.utils._runtime import is_xet_available
RESULT["xet_available"] = is_xet_available()

# Download back as a stranger would: fresh cache (HF_HOME is empty for this repo), repo id only.
snapshot = snapshot_download(ARGS["repo_id"])
RESULT["downloaded"] = local_tree(snapshot)
if ARGS.get("lora"):
    from peft import AutoPeftModelForCausalLM
    reloaded = AutoPeftModelForCausalLM.from_pretrained(ARGS["repo_id"])
    RESULT["adapter_base"] = reloaded.peft_config["default"].base_model_name_or_path
else:
    reloaded = AutoModelForCausalLM.from_pretrained(ARGS["repo_id"])
tok2 = AutoTokenizer.from_pretrained(ARGS["repo_id"])
after_logits, after_gen = probe_outputs(reloaded, tok2)
RESULT["logits_equal"] = bool(torch.equal(before_logits, after_logits))
RESULT["max_abs_diff"] = float((before_logits - after_logits).abs().max())
RESULT["generated_before"], RESULT["generated_after"] = before_gen, after_gen
RESULT["tokenizer_same"] = tok2(PROBE)["input_ids"] == tok(PROBE)["input_ids"]
from transformers import GenerationConfig
RESULT["generation_eos"] = GenerationConfig.from_pretrained(ARGS["repo_id"]).eos_token_id
from huggingface_hub import ModelCard
card = ModelCard.load(ARGS["repo_id"])
RESULT["card_base_model"] = card.data.base_model
RESULT["card_library"] = card.data.library_name
finish()
'''


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n"), text[:80]
    meta = yaml.safe_load(text.split("---\n")[1])
    assert isinstance(meta, dict)
    return meta


def _all_committed_paths(server: HubServer, repo_id: str) -> set[str]:
    return {path for commit in server.history(repo_id) for path in commit.tree}


def _assert_final_artefacts_only(server: HubServer, repo_id: str) -> None:
    paths = _all_committed_paths(server, repo_id)  # every commit, including the background checkpoint pushes
    assert not [p for p in paths if p.startswith(("checkpoint-", "last-checkpoint")) or p.split("/")[-1] in FORBIDDEN], paths


def _assert_card(server: HubServer, repo_id: str, library: str, peft: bool) -> dict:
    files = server.files(repo_id)
    text = files["README.md"].decode()
    meta = _front_matter(text)
    assert "None" not in text
    assert meta["base_model"] == "user/tiny-base"  # a Hub id: the base model was loaded from the (loopback) Hub
    assert meta["library_name"] == library
    assert {"trl", "trl-ext", "generated_from_trainer", "push-test"} <= set(meta["tags"])
    assert ("peft" in meta["tags"]) == peft
    assert "![Training curves](training_curves.png)" in text
    assert files["training_curves.png"].startswith(b"\x89PNG\r\n\x1a\n")
    return meta


def _run_push(run_hub_script, server, tiny_model_path, tmp_path, repo_id, **extra):
    args = {"model_path": tiny_model_path, "output_dir": str(tmp_path / "out"), "repo_id": repo_id,
            "base_repo": "user/tiny-base", **extra}
    return run_hub_script(PUSH_AND_RELOAD, server, args, xet=extra.get("xet", False))


def test_push_full_model_then_reload_gives_same_logits(run_hub_script, hub_server, tiny_model_path, tmp_path):
    res = _run_push(run_hub_script, hub_server, tiny_model_path, tmp_path, "user/tiny")

    assert res["logits_equal"], res["max_abs_diff"]
    assert res["generated_after"] == res["generated_before"] and len(res["generated_after"]) > 0
    assert res["tokenizer_same"] and res["generation_eos"] is not None
    assert not res["xet_available"]  # HF_HUB_DISABLE_XET=1
    assert res["card_base_model"] == "user/tiny-base" and res["card_library"] == "transformers"
    # checkpoints with optimizer states exist locally (save_strategy="steps") but were never pushed
    assert any(f.startswith("checkpoint-") and f.endswith("optimizer.pt") for f in res["local_files"])
    _assert_final_artefacts_only(hub_server, "user/tiny")
    files = set(hub_server.files("user/tiny"))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "README.md", "training_curves.png"} <= files
    assert files == set(res["downloaded"])
    _assert_card(hub_server, "user/tiny", "transformers", peft=False)
    # the weights went through the git-LFS API (HF_HUB_DISABLE_XET=1), the final push is the last commit
    info = hub_server.file_info("user/tiny")
    assert info["model.safetensors"]["lfs"] and not info["config.json"]["lfs"]
    assert any(m == "PUT" and p.startswith("/__lfs/upload/") for m, p, _ in hub_server.requests)
    history = hub_server.history("user/tiny")
    assert history[0].oid == res["commit"] and history[0].title == "End of training"
    assert any(c.title.startswith("Training in progress") for c in history)  # hub_strategy="every_save" pushes
    assert hub_server.unhandled == []


def test_push_lora_adapter_then_reload_gives_same_logits(run_hub_script, hub_server, tiny_model_path, tmp_path):
    res = _run_push(run_hub_script, hub_server, tiny_model_path, tmp_path, "user/tiny-lora", lora=True)

    assert res["logits_equal"], res["max_abs_diff"]
    assert res["generated_after"] == res["generated_before"]
    assert res["adapter_base"] == "user/tiny-base"  # the adapter points at a base a stranger can download
    files = set(hub_server.files("user/tiny-lora"))
    assert {"adapter_config.json", "adapter_model.safetensors", "generation_config.json", "tokenizer.json",
            "README.md", "training_curves.png"} <= files
    assert "model.safetensors" not in files  # only the adapter is pushed, not the base weights
    _assert_final_artefacts_only(hub_server, "user/tiny-lora")
    _assert_card(hub_server, "user/tiny-lora", "peft", peft=True)
    assert hub_server.unhandled == []


@pytest.mark.slow
def test_checkpoints_are_pushed_only_when_asked(run_hub_script, hub_server, tiny_model_path, tmp_path):
    """hub_strategy="checkpoint" is the explicit opt-in: last-checkpoint/ (with optimizer states) is then pushed."""
    res = _run_push(run_hub_script, hub_server, tiny_model_path, tmp_path, "user/tiny-ckpt", hub_strategy="checkpoint")
    assert res["logits_equal"]
    paths = _all_committed_paths(hub_server, "user/tiny-ckpt")
    assert "last-checkpoint/optimizer.pt" in paths and "last-checkpoint/model.safetensors" in paths
    assert "model.safetensors" in hub_server.files("user/tiny-ckpt")


def test_push_with_xet_enabled_client(run_hub_script, hub_server_factory, tiny_model_path, tmp_path):
    """hf_xet installed and HF_HUB_DISABLE_XET unset: the server answers uploadMode "regular", so no Xet is used."""
    server = hub_server_factory(lfs=False)
    res = _run_push(run_hub_script, server, tiny_model_path, tmp_path, "user/tiny-xet", xet=True)

    assert res["logits_equal"], res["max_abs_diff"]
    info = server.file_info("user/tiny-xet")
    assert not any(e["lfs"] for e in info.values())  # everything arrived inline in the ndjson commit
    assert res["xet_available"]  # the client would have used Xet for any "lfs" file
    assert not [p for _, p, _ in server.requests if "/info/lfs/" in p or p.startswith("/__lfs/") or "/xet-" in p]
    _assert_final_artefacts_only(server, "user/tiny-xet")
    assert server.unhandled == []


FAILED_PUSH = GENERIC_TRAINER + '''
trainer, tok = build_trainer(save_strategy="no")
trainer.train()
before_logits, _ = probe_outputs(trainer.model, tok)
RESULT["errors"] = []
for attempt, kwargs in (("auth", {"token": "hf_revoked_token"}), ("killed", {})):
    try:
        trainer.push_to_hub(**kwargs)
    except HubPushError as err:
        RESULT["errors"].append({"attempt": attempt, "message": str(err), "cause": type(err.__cause__).__name__,
                                 "local_files": err.local_files})
    # nothing local is lost: the folder reloads to the same logits after each failed push
    reloaded = AutoModelForCausalLM.from_pretrained(ARGS["output_dir"])
    RESULT[f"{attempt}_local_logits_equal"] = bool(torch.equal(before_logits, probe_outputs(reloaded, tok)[0]))
RESULT["local_files"] = local_tree(ARGS["output_dir"])
finish()
'''


def test_failed_push_raises_clear_error_after_local_save(run_hub_script, hub_server, tiny_model_path, tmp_path):
    # 1st push: a token the server rejects (401). 2nd push: the server dies when the commit arrives, i.e. after the
    # weights were uploaded through LFS and before anything is committed.
    hub_server.kill_on("POST", r"/api/models/user/tiny-fail/commit/main")
    args = {"model_path": tiny_model_path, "output_dir": str(tmp_path / "out"), "repo_id": "user/tiny-fail",
            "base_repo": "user/tiny-base"}
    res = run_hub_script(FAILED_PUSH, hub_server, args)

    auth, killed = res["errors"]
    assert auth["attempt"] == "auth" and "authentication failed (HTTP 401" in auth["message"]
    assert killed["attempt"] == "killed" and killed["cause"] in ("RemoteProtocolError", "ReadError", "ConnectError")
    for err in (auth, killed):
        assert "The local save is complete" in err["message"] and "user/tiny-fail" in err["message"]
        assert "trainer.push_to_hub()" in err["message"]
        assert {"model.safetensors", "config.json", "README.md", "training_curves.png"} <= set(err["local_files"])
    assert res["auth_local_logits_equal"] and res["killed_local_logits_equal"]
    assert {"model.safetensors", "tokenizer.json", "README.md", "training_curves.png"} <= set(res["local_files"])
    # killed mid-push: the LFS upload of the weights happened, the commit never did
    assert hub_server.killed
    assert any(m == "PUT" and p.startswith("/__lfs/upload/") for m, p, _ in hub_server.requests)
    assert [c.title for c in hub_server.history("user/tiny-fail")] == ["initial commit"]


def test_unreachable_hub_fails_before_training(tmp_path, hub_server, run_hub_script, tiny_model_path):
    """A wrong endpoint/token is reported when the trainer is built (create_repo), before any training step."""
    code = GENERIC_TRAINER + '''
from transformers import TrainingArguments
publish_base_model()
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(ARGS["base_repo"])
args = TrainingArguments(ARGS["output_dir"], max_steps=1, report_to="none", use_cpu=True, push_to_hub=True,
                         hub_model_id=ARGS["repo_id"], hub_token="hf_bad")
try:
    PushTrainer(model=model, args=args)
except HubPushError as err:
    RESULT["message"] = str(err)
finish()
'''
    args = {"model_path": tiny_model_path, "output_dir": str(tmp_path / "out"), "repo_id": "user/never",
            "base_repo": "user/tiny-base"}
    res = run_hub_script(code, hub_server, args)
    assert "cannot be created" in res["message"] and "Nothing was trained yet" in res["message"]
    assert "HTTP 401" in res["message"]
    assert "user/never" not in hub_server.repos


def test_server_rejects_requests_without_token(hub_server, run_hub_script):
    code = '''
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
try:
    HfApi(token=False).create_repo("user/anon")
except HfHubHTTPError as err:
    RESULT["status"] = err.response.status_code
finish()
'''
    assert run_hub_script(code, hub_server)["status"] == 401
    assert "user/anon" not in hub_server.repos


# ----------------------------------------------------------------------------------------------------------------------
# One end-to-end push per trl_ext trainer: short training from a base model hosted on the loopback Hub, push, then a
# stranger's reload by running the card's own "How to load" snippet; same logits (and values, for RFT) as before.

TRAINER_PUSH = COMMON + '''
import re
from datasets import Dataset
from huggingface_hub import ModelCard

PROMPTS = ["What is 2+2?", "Compute 3*5.", "Add 7 and 8.", "What is 10-4?"]

def char_variety(completions, **kwargs):
    return [len(set(c)) / 10.0 for c in completions]

publish_base_model()
common = dict(output_dir=ARGS["output_dir"], max_steps=1, logging_steps=1, learning_rate=1e-3, report_to="none",
              save_strategy="no", use_cpu=True, bf16=False, seed=0, disable_tqdm=True, push_to_hub=True,
              hub_model_id=ARGS["repo_id"])
kind = ARGS["trainer"]
if kind == "rft":
    from trl_ext.trainers.rft import RFTConfig, RFTTrainer
    ds = Dataset.from_dict({"prompt": PROMPTS * 2, "answer": ["4", "15", "15", "6"] * 2})
    args = RFTConfig(per_device_train_batch_size=4, max_completion_length=8, **common)
    peft_config = None
    if ARGS.get("lora"):
        from peft import LoraConfig
        peft_config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                 init_lora_weights=False)
    trainer = RFTTrainer(model=ARGS["base_repo"], reward_funcs=char_variety, args=args, train_dataset=ds,
                         peft_config=peft_config)
elif kind == "process_grpo":
    from trl_ext.rewards.process import ArithmeticStepVerifier
    from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer
    ds = Dataset.from_dict({"prompt": PROMPTS * 2, "answer": ["4", "15", "15", "6"] * 2})
    args = ProcessGRPOConfig(num_generations=4, per_device_train_batch_size=4, max_completion_length=8, **common)
    trainer = ProcessGRPOTrainer(model=ARGS["base_repo"], reward_funcs=[char_variety],
                                 process_reward_funcs=[ArithmeticStepVerifier()], args=args, train_dataset=ds)
elif kind == "unified":
    from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer
    data = [Dataset.from_dict({"prompt": PROMPTS, "completion": [" 4", " 15", " 15", " 6"]}),
            Dataset.from_dict({"prompt": PROMPTS, "chosen": [" 4", " 15", " 15", " 6"],
                               "rejected": [" 5", " 8", " 14", " 7"]})]
    args = UnifiedLikelihoodConfig(loss_type=["sft", "sigmoid"], per_device_train_batch_size=4,
                                   gradient_checkpointing=False, dataloader_pin_memory=False, **common)
    trainer = UnifiedLikelihoodTrainer(ARGS["base_repo"], args=args, train_dataset=data)
trainer.train()
tok = trainer.processing_class
model = trainer.accelerator.unwrap_model(trainer.model)
before_logits, before_gen = probe_outputs(model, tok)
if kind == "rft":
    enc = tok([PROBE], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
        before_values = trainer.value_head(hidden.float())
trainer.push_to_hub()

card = ModelCard.load(ARGS["repo_id"])  # downloaded from the loopback Hub
snippet = re.search(r"## How to load\\s*```python\\n(.*?)```", card.text, re.S).group(1)
RESULT["snippet"] = snippet
namespace = {}
exec(snippet, namespace)  # the card's own loading code, as a stranger would run it
reloaded, tok2 = namespace["model"], namespace["tokenizer"]
after_logits, after_gen = probe_outputs(reloaded, tok2)
RESULT["logits_equal"] = bool(torch.equal(before_logits, after_logits))
RESULT["max_abs_diff"] = float((before_logits - after_logits).abs().max())
RESULT["generated_before"], RESULT["generated_after"] = before_gen, after_gen
if kind == "rft":
    value_head = namespace["value_head"]
    enc = tok2([PROBE], return_tensors="pt")
    with torch.no_grad():
        after_values = value_head(reloaded(**enc, output_hidden_states=True).hidden_states[-1].float())
    RESULT["values_equal"] = bool(torch.equal(before_values, after_values))
    RESULT["values_nonzero"] = bool(after_values.abs().sum() > 0)
finish()
'''

TRAINERS = {
    # trainer: (module file, trainer's card tag, extra files that must be pushed)
    "rft": ("trl_ext/trainers/rft.py", "rft", {"value_head.safetensors", "value_head_config.json"}),
    "process_grpo": ("trl_ext/trainers/process_grpo.py", "process-supervision", set()),
    "unified": ("trl_ext/trainers/unified.py", "unified-likelihood", set()),
}


@pytest.mark.parametrize("kind", sorted(TRAINERS))
def test_trainer_push_and_reload_with_card_snippet(kind, run_hub_script, hub_server, tiny_model_path, tmp_path):
    import importlib

    from hub_fixtures import REPO_ROOT
    from trl_ext.model_card import ModelCardMixin

    module_file, tag, extra_files = TRAINERS[kind]
    if not (REPO_ROOT / module_file).exists():
        pytest.skip(f"{module_file} has not landed yet")
    module = importlib.import_module(module_file[:-3].replace("/", "."))
    trainer_cls = next(v for k, v in vars(module).items() if k.endswith("Trainer") and v.__module__ == module.__name__)
    if not issubclass(trainer_cls, ModelCardMixin):
        pytest.skip(f"{trainer_cls.__name__} does not mix in ModelCardMixin yet (trl_ext card/plot not produced)")

    repo_id = f"user/tiny-{kind.replace('_', '-')}"
    args = {"model_path": tiny_model_path, "output_dir": str(tmp_path / "out"), "repo_id": repo_id,
            "base_repo": "user/tiny-base", "trainer": kind}
    res = run_hub_script(TRAINER_PUSH, hub_server, args)

    assert res["logits_equal"], res["max_abs_diff"]
    assert res["generated_after"] == res["generated_before"] and len(res["generated_after"]) > 0
    if kind == "rft":
        assert res["values_equal"] and res["values_nonzero"]
        assert "load_policy_and_value_head" in res["snippet"]
    files = set(hub_server.files(repo_id))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md",
            "training_curves.png"} | extra_files <= files, files
    _assert_final_artefacts_only(hub_server, repo_id)
    text = hub_server.files(repo_id)["README.md"].decode()
    meta = _front_matter(text)
    assert meta["base_model"] == "user/tiny-base" and meta["library_name"] == "transformers"
    assert {"trl", "trl-ext", "generated_from_trainer", tag} <= set(meta["tags"]), meta["tags"]
    assert "![Training curves](training_curves.png)" in text
    assert hub_server.files(repo_id)["training_curves.png"].startswith(b"\x89PNG")
    assert "None" not in text, [line for line in text.splitlines() if "None" in line]
    assert hub_server.unhandled == []


@pytest.mark.slow
def test_rft_lora_push_reloads_adapter_and_value_head(run_hub_script, hub_server, tiny_model_path, tmp_path):
    args = {"model_path": tiny_model_path, "output_dir": str(tmp_path / "out"), "repo_id": "user/tiny-rft-lora",
            "base_repo": "user/tiny-base", "trainer": "rft", "lora": True}
    res = run_hub_script(TRAINER_PUSH, hub_server, args)
    assert res["logits_equal"] and res["values_equal"] and res["values_nonzero"]
    files = set(hub_server.files("user/tiny-rft-lora"))
    assert {"adapter_config.json", "adapter_model.safetensors", "value_head.safetensors", "value_head_config.json",
            "generation_config.json" if _has_hub_push_mixin("rft") else "README.md", "README.md",
            "training_curves.png"} <= files
    assert "model.safetensors" not in files
    meta = _front_matter(hub_server.files("user/tiny-rft-lora")["README.md"].decode())
    assert meta["library_name"] == "peft" and "peft" in meta["tags"] and meta["base_model"] == "user/tiny-base"
    _assert_final_artefacts_only(hub_server, "user/tiny-rft-lora")


RFT_COMMAND_LORA_PUSH = COMMON + """
import hashlib
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl_ext.cli.scripts.rft import main as rft_main, make_parser
from trl_ext.models.value_head import ValueHead, load_policy_and_value_head

publish_base_model()
parsed = make_parser().parse_args_and_config([  # what `trl-ext rft --push_to_hub ...` runs (LoRA is its default)
    "--model_name_or_path", ARGS["base_repo"], "--output_dir", ARGS["output_dir"], "--max_steps", "1",
    "--warmup_steps", "0", "--per_device_train_batch_size", "2", "--max_completion_length", "6", "--eval_max_new_tokens", "6",
    "--eval_size", "2", "--train_size", "4", "--use_peft", "true", "--lora_r", "4", "--lora_target_modules",
    "q_proj", "v_proj", "--push_to_hub", "true", "--hub_model_id", ARGS["repo_id"], "--report_to", "none",
    "--disable_tqdm", "true"])
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
"""


@pytest.mark.slow
def test_rft_command_lora_push_card_and_adapter_load_by_repo_id(run_hub_script, hub_server, tiny_model_path, tmp_path):
    """`trl-ext rft` (LoRA) with --push_to_hub: the adapter, the value head and the card all load by repo id."""
    import hashlib

    repo_id = "user/tiny-rft-lora-cli"
    args = {"model_path": tiny_model_path, "output_dir": str(tmp_path / "out"), "repo_id": repo_id,
            "base_repo": "user/tiny-base"}
    res = run_hub_script(RFT_COMMAND_LORA_PUSH, hub_server, args)

    assert res["adapter_equals_local"] and res["adapter_changes_base"] > 0  # the trained adapter, not B = 0
    assert res["policy_type"].startswith("Peft") and res["policy_equals_local"] and res["value_head_equals_local"]
    files = hub_server.files(repo_id)
    assert {"adapter_config.json", "adapter_model.safetensors", "value_head.safetensors", "value_head_config.json",
            "tokenizer.json", "README.md", "training_curves.png"} <= set(files) == set(res["downloaded"])
    assert "model.safetensors" not in files
    for name, digest in res["local_sha256"].items():  # the Hub holds exactly the local output folder's files
        assert hashlib.sha256(files[name]).hexdigest() == digest, name
    text = files["README.md"].decode()
    assert "More Information Needed" not in text and text.count("Framework versions") == 1
    meta = _front_matter(text)
    assert meta["base_model"] == "user/tiny-base" and meta["library_name"] == "peft"
    assert {"trl", "trl-ext", "rft", "peft"} <= set(meta["tags"]), meta["tags"]
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    (metric,) = result["metrics"]
    assert metric["name"] == "held-out answer accuracy" and metric["type"] == "accuracy"
    assert metric["value"] == pytest.approx(res["summary"]["accuracy_after"])
    assert repo_id in text  # the card's loading code names the repo
    _assert_final_artefacts_only(hub_server, repo_id)
    assert hub_server.unhandled == []


def _has_hub_push_mixin(kind: str) -> bool:
    import importlib

    from trl_ext.hub import HubPushMixin

    module = importlib.import_module(TRAINERS[kind][0][:-3].replace("/", "."))
    return any(isinstance(v, type) and issubclass(v, HubPushMixin) for v in vars(module).values()
               if getattr(v, "__module__", None) == module.__name__)


def test_server_keeps_history_and_serves_old_revisions(hub_server, run_hub_script):
    """The loopback Hub itself, with the real client: commits with history, old revisions, conflicts, deletions."""
    code = '''
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError
api = HfApi()
api.create_repo("user/h")
first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a/b.txt", repo_id="user/h", commit_message="one")
second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="a/b.txt", repo_id="user/h", commit_message="two")
RESULT["old"] = Path(hf_hub_download("user/h", "a/b.txt", revision=first.oid)).read_text()
RESULT["new"] = Path(hf_hub_download("user/h", "a/b.txt")).read_text()
RESULT["titles"] = [c.title for c in api.list_repo_commits("user/h")]
try:  # a commit based on a stale parent is refused
    api.upload_file(path_or_fileobj=b"v3", path_in_repo="c.txt", repo_id="user/h", parent_commit=first.oid)
except HfHubHTTPError as err:
    RESULT["stale_parent"] = err.response.status_code
api.delete_file("a/b.txt", repo_id="user/h")
try:
    hf_hub_download("user/h", "a/b.txt", force_download=True)
except RemoteEntryNotFoundError:
    RESULT["deleted"] = True
RESULT["tree"] = [f.path for f in api.list_repo_tree("user/h", recursive=True, revision=second.oid)]
finish()
'''
    res = run_hub_script(code, hub_server)
    assert (res["old"], res["new"]) == ("v1", "v2")
    assert res["titles"] == ["two", "one", "initial commit"]
    assert res["stale_parent"] == 412 and res["deleted"]
    assert res["tree"] == ["a", "a/b.txt"]
    assert [c.title for c in hub_server.history("user/h")][-3:] == ["two", "one", "initial commit"]
    assert hub_server.unhandled == []
