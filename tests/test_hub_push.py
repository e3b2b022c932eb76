"""End-to-end ``push_to_hub`` against a loopback Hub-compatible server, with the real ``huggingface_hub`` client.

Each test runs a script of ``tests/scripts/`` (``hub_*.py``) in a subprocess whose ``HF_ENDPOINT`` is
:class:`tests.hub_server.HubServer`: it trains for a couple of steps, pushes with ``trainer.push_to_hub()``
(``Trainer.push_to_hub`` -> ``HfApi.upload_folder``), downloads the repo back with ``snapshot_download`` /
``from_pretrained("user/...")`` and compares the logits with the ones computed before the push. The pytest process
then inspects what the server stored: the files of every commit, the card's YAML
front matter, and the requests the client made.
"""

from __future__ import annotations

import pytest
import yaml

from hub_fixtures import HUB_TOKEN, hub_script_runner
from hub_server import HubServer

# Files that must never reach the Hub unless explicitly asked (hub_strategy="checkpoint"/"all_checkpoints").
FORBIDDEN = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "scaler.pt")


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


def _run_push(run_hub_script, server, tiny_model_path, tmp_path, repo_id, xet=False, **extra):
    run = {"output_dir": str(tmp_path / "out"), "repo_id": repo_id, **extra}
    args = {"model_path": tiny_model_path, "base_repo": "user/tiny-base", "runs": {repo_id: run}}
    return run_hub_script("hub_push_and_reload", server, args, xet=xet)[repo_id]


@pytest.fixture(scope="module")
def full_and_lora_pushes(tiny_model_path, tmp_path_factory):
    """``(results by repo id, server)``: the full model (``user/tiny``) and a LoRA adapter (``user/tiny-lora``)
    trained, pushed and reloaded one after the other, then a trainer with a refused token (``"refused"``, repo
    ``user/never``), in one subprocess (one interpreter start-up) against one loopback Hub."""
    folder = tmp_path_factory.mktemp("generic-push")
    runs = {"user/tiny": {"output_dir": str(folder / "full")},
            "user/tiny-lora": {"output_dir": str(folder / "lora"), "lora": True}}
    runs = {repo_id: {"repo_id": repo_id, **run} for repo_id, run in runs.items()}
    args = {"model_path": tiny_model_path, "base_repo": "user/tiny-base", "runs": runs,
            "refused": {"output_dir": str(folder / "refused"), "repo_id": "user/never"}}
    with HubServer(token=HUB_TOKEN, lfs=True) as server:
        yield hub_script_runner(folder)("hub_push_and_reload", server, args), server


def test_push_full_model_then_reload_gives_same_logits(full_and_lora_pushes):
    results, hub_server = full_and_lora_pushes
    res = results["user/tiny"]

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
    assert any(c.title.startswith("Training in progress") for c in history), (  # hub_strategy="every_save" pushes
        [c.title for c in history], [r for r in hub_server.requests if r[2] >= 400])
    assert hub_server.unhandled == []


def test_push_lora_adapter_then_reload_gives_same_logits(full_and_lora_pushes):
    results, hub_server = full_and_lora_pushes
    res = results["user/tiny-lora"]

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


def test_failed_push_raises_clear_error_after_local_save(run_hub_script, hub_server, tiny_model_path, tmp_path):
    # 1st push: a token the server rejects (401). 2nd push: the server dies when the commit arrives, i.e. after the
    # weights were uploaded through LFS and before anything is committed.
    hub_server.kill_on("POST", r"/api/models/user/tiny-fail/commit/main")
    args = {"model_path": tiny_model_path, "output_dir": str(tmp_path / "out"), "repo_id": "user/tiny-fail",
            "base_repo": "user/tiny-base"}
    res = run_hub_script("hub_failed_push", hub_server, args)

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


def test_unreachable_hub_fails_before_training(full_and_lora_pushes):
    """A wrong endpoint/token is reported when the trainer is built (create_repo), before any training step."""
    results, hub_server = full_and_lora_pushes
    message = results["refused"]
    assert "cannot be created" in message and "Nothing was trained yet" in message
    assert "HTTP 401" in message
    assert "user/never" not in hub_server.repos


def test_server_rejects_requests_without_token(hub_server, run_hub_script):
    assert run_hub_script("hub_anonymous", hub_server)["status"] == 401
    assert "user/anon" not in hub_server.repos


# ----------------------------------------------------------------------------------------------------------------------
# One end-to-end push per trl_ext trainer: short training from a base model hosted on the loopback Hub, push, then a
# stranger's reload by running the card's own "How to load" snippet; same logits (and values, for RFT) as before.

TRAINERS = {
    # trainer: (module file, trainer's card tag, extra files that must be pushed)
    "rft": ("trl_ext/trainers/rft.py", "rft", {"value_head.safetensors", "value_head_config.json"}),
    "process_grpo": ("trl_ext/trainers/process_grpo.py", "process-supervision", set()),
    "unified": ("trl_ext/trainers/unified.py", "unified-likelihood", set()),
}


def _repo_id(kind: str) -> str:
    return f"user/tiny-{kind.replace('_', '-')}"


@pytest.fixture(scope="module")
def trainer_pushes(tiny_model_path, tmp_path_factory):
    """``(results by trainer, server)``: one subprocess (one interpreter start-up, not three) trains, pushes and
    reloads every trainer of TRAINERS in turn against one loopback Hub, each to its own repo."""
    folder = tmp_path_factory.mktemp("trainer-push")
    runs = {kind: {"output_dir": str(folder / kind), "repo_id": _repo_id(kind)} for kind in sorted(TRAINERS)}
    with HubServer(token=HUB_TOKEN, lfs=True) as server:
        res = hub_script_runner(folder)("hub_trainer_push", server, {"model_path": tiny_model_path,
                                                                     "base_repo": "user/tiny-base", "runs": runs})
        yield res, server


@pytest.mark.parametrize("kind", sorted(TRAINERS))
def test_trainer_push_and_reload_with_card_snippet(kind, request):
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

    results, hub_server = request.getfixturevalue("trainer_pushes")
    res, repo_id = results[kind], _repo_id(kind)

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
    run = {"output_dir": str(tmp_path / "out"), "repo_id": "user/tiny-rft-lora", "lora": True}
    res = run_hub_script("hub_trainer_push", hub_server, {"model_path": tiny_model_path, "base_repo": "user/tiny-base",
                                                          "runs": {"rft": run}})["rft"]
    assert res["logits_equal"] and res["values_equal"] and res["values_nonzero"]
    files = set(hub_server.files("user/tiny-rft-lora"))
    assert {"adapter_config.json", "adapter_model.safetensors", "value_head.safetensors", "value_head_config.json",
            "generation_config.json" if _has_hub_push_mixin("rft") else "README.md", "README.md",
            "training_curves.png"} <= files
    assert "model.safetensors" not in files
    meta = _front_matter(hub_server.files("user/tiny-rft-lora")["README.md"].decode())
    assert meta["library_name"] == "peft" and "peft" in meta["tags"] and meta["base_model"] == "user/tiny-base"
    _assert_final_artefacts_only(hub_server, "user/tiny-rft-lora")


@pytest.mark.slow
def test_rft_command_lora_push_card_and_adapter_load_by_repo_id(run_hub_script, hub_server, tiny_model_path, tmp_path):
    """`trl-ext rft` (LoRA) with --push_to_hub: the adapter, the value head and the card all load by repo id."""
    import hashlib

    repo_id = "user/tiny-rft-lora-cli"
    args = {"model_path": tiny_model_path, "output_dir": str(tmp_path / "out"), "repo_id": repo_id,
            "base_repo": "user/tiny-base"}
    res = run_hub_script("hub_rft_command_lora_push", hub_server, args)

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
    res = run_hub_script("hub_history", hub_server)
    assert (res["old"], res["new"]) == ("v1", "v2")
    assert res["titles"] == ["two", "one", "initial commit"]
    assert res["stale_parent"] == 412 and res["deleted"]
    assert res["tree"] == ["a", "a/b.txt"]
    assert [c.title for c in hub_server.history("user/h")][-3:] == ["two", "one", "initial commit"]
    assert hub_server.unhandled == []
