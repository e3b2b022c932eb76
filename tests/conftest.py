"""Shared fixtures. Tests never touch the network: the Hub is switched off before anything imports it."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL's notice on importing its experimental modules

import pytest  # noqa: E402

# The loopback Hub fixtures (tests/hub_fixtures.py), visible to every test module. Imported here rather than named in
# a test module's `pytest_plugins`, which left them unregistered on the CI machine's pytest (11 "fixture not found").
from hub_fixtures import hub_server, hub_server_factory, run_hub_script  # noqa: E402,F401

# tests/scripts/ holds the scripts that tests run in subprocesses (Hub pushes, multi-process workers): they run at
# import, so --doctest-modules must not import them.
collect_ignore = ["scripts"]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """Folder of a tiny random Llama (2 layers, width 64) with the SmolLM2 tokenizer; built once per session."""
    from trl_ext.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)
