"""ValueHead: fp32 forward, save/load round trip, init from a reward model's score head, attaching to a (PEFT) policy
without polluting its save_pretrained folder, load_policy_and_value_head, push_to_hub upload content."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from trl_ext.models.value_head import (
    VALUE_HEAD_CONFIG_NAME,
    VALUE_HEAD_WEIGHTS_NAME,
    ValueHead,
    attach_value_head,
    get_value_head,
    has_value_head_files,
    load_policy_and_value_head,
)


def test_forward_shape_and_fp32_under_autocast():
    head = ValueHead(8)
    hidden = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = head(hidden)
    assert values.shape == (2, 5) and values.dtype == torch.float32
    expected = hidden.float() @ head.summary.weight[0] + head.summary.bias[0]
    torch.testing.assert_close(values, expected)


def test_init_modes():
    assert torch.count_nonzero(ValueHead(16, init="zeros").summary.weight) == 0
    normal = ValueHead(16, init="normal").summary
    assert torch.count_nonzero(normal.weight) == 16 and normal.bias.item() == 0.0
    with pytest.raises(ValueError, match="init must be"):
        ValueHead(16, init="xavier")
    with pytest.raises(ValueError, match="hidden_size"):
        ValueHead(0)


def test_save_load_round_trip(tmp_path):
    head = ValueHead(12)
    head.source = "my-reward-model"
    head.save_pretrained(tmp_path)
    assert has_value_head_files(tmp_path)
    config = json.loads((tmp_path / VALUE_HEAD_CONFIG_NAME).read_text())
    assert config["hidden_size"] == 12 and config["dtype"] == "float32" and config["source"] == "my-reward-model"
    assert set(load_file(str(tmp_path / VALUE_HEAD_WEIGHTS_NAME))) == {"summary.weight", "summary.bias"}
    loaded = ValueHead.from_pretrained(tmp_path)
    assert loaded.source == "my-reward-model"
    for a, b in zip(head.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match=VALUE_HEAD_CONFIG_NAME):
        ValueHead.from_pretrained(tmp_path / "missing")


def test_from_reward_model_copies_score_head(tiny_model_path):
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    torch.nn.init.normal_(rm.score.weight)
    head = ValueHead.from_reward_model(rm)
    assert head.hidden_size == rm.config.hidden_size
    assert torch.equal(head.summary.weight, rm.score.weight.float())
    assert head.summary.bias.item() == 0.0  # Llama's score head has no bias
    two = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=2)
    with pytest.raises(ValueError, match="num_labels=1"):
        ValueHead.from_reward_model(two)
    with pytest.raises(ValueError, match="no linear `score`"):
        ValueHead.from_reward_model(torch.nn.Linear(2, 2))


def test_attached_head_is_trainable_submodule_but_not_in_model_folder(tiny_model_path, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    head = ValueHead(model.config.hidden_size)
    attach_value_head(model, head)
    assert get_value_head(model) is head
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "value_head.summary.weight" in names
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert not any("value_head" in k for k in saved), "the value head leaked into model.safetensors"
    with pytest.raises(ValueError, match="hidden_size"):
        attach_value_head(model, ValueHead(7))


def test_attach_to_peft_model_keeps_head_out_of_adapter(tiny_model_path, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), LoraConfig(r=4, target_modules=["q_proj"]))
    head = ValueHead(model.config.hidden_size)
    attach_value_head(model, head)
    assert get_value_head(model) is head
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("value_head" in n for n in trainable) and any("lora_" in n for n in trainable)
    model.save_pretrained(tmp_path)
    adapter = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert adapter and not any("value_head" in k for k in adapter)


@pytest.mark.parametrize("use_peft", [False, True])
def test_load_policy_and_value_head(tiny_model_path, tmp_path, use_peft):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    if use_peft:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"]))
    head = ValueHead(model.config.hidden_size)
    attach_value_head(model, head)
    model.save_pretrained(tmp_path)
    head.save_pretrained(tmp_path)
    policy, loaded = load_policy_and_value_head(tmp_path)
    assert hasattr(policy, "peft_config") == use_peft
    assert torch.equal(loaded.summary.weight, head.summary.weight)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        hidden = policy(ids, output_hidden_states=True).hidden_states[-1]
        assert loaded(hidden).shape == (1, 3)
    attached, _ = load_policy_and_value_head(tmp_path, attach=True)
    assert get_value_head(attached) is not None


def test_push_to_hub_uploads_both_files(monkeypatch):
    import huggingface_hub

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploaded["repo"] = repo_id

        def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None):
            import os

            uploaded["files"] = sorted(os.listdir(folder_path))
            return "https://hub/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    ValueHead(4).push_to_hub("me/critic")
    assert uploaded == {"repo": "me/critic", "files": [VALUE_HEAD_WEIGHTS_NAME, VALUE_HEAD_CONFIG_NAME]}
