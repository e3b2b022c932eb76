"""Model-card rendering from trl_ext's templates, and the templates shipping inside the wheel."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from trl_ext.model_card import MODEL_CARDS_DIR, ModelCardMixin, base_model_name
from trl_ext.models import DEFAULT_MODEL_HUB_ID, default_model_path

REPO = Path(__file__).resolve().parents[1]


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _train_tiny(tiny_model_path, tmp_path, peft: bool):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    class CardTrainer(ModelCardMixin, Trainer):
        _card_template = "rft.md"
        _card_trainer_name = "TestTrainer"
        _card_tags = ("test-tag",)
        _card_citation = "@article{x, title={X}}"
        _card_plot_keys = ("loss",)

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    if peft:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    enc = tok(["2 + 3 = 5", "1 + 1 = 2"] * 4)
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "labels": enc["input_ids"]})
    args = TrainingArguments(str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=1, logging_steps=1,
                             report_to="none", use_cpu=True, save_strategy="no")
    trainer = CardTrainer(model=model, args=args, train_dataset=ds)
    trainer.train()
    torch.manual_seed(0)
    trainer.create_model_card(dataset_name="reasoning-gym/chain_sum")
    return (tmp_path / "out" / "README.md").read_text(), tmp_path / "out"


@pytest.mark.real_plots  # a trainer run drawing its curves in full (elsewhere the pixels are skipped)
@pytest.mark.parametrize("peft", [False, True])
def test_card_renders_without_none_with_metadata_and_plot(tiny_model_path, tmp_path, peft):
    text, out = _train_tiny(tiny_model_path, tmp_path, peft)
    meta = _front_matter(text)
    assert "None" not in text
    assert meta["library_name"] == ("peft" if peft else "transformers")
    assert {"trl", "trl-ext", "generated_from_trainer", "test-tag"} <= set(meta["tags"])
    assert ("peft" in meta["tags"]) == peft
    assert "base_model" not in meta  # a random local folder has no Hub id: nothing invented
    assert "![Training curves](training_curves.png)" in text and (out / "training_curves.png").is_file()
    assert "| `learning_rate` |" in text and "| `train_loss` |" in text
    assert "@article{x" in text and "trl:" in text.lower()
    assert ("AutoPeftModelForCausalLM" in text) == peft


def test_base_model_name_maps_the_embedded_default_to_its_hub_id(tmp_path, monkeypatch):
    import trl_ext.models.default as default_mod

    # the folder default_model_path() builds, in an empty cache, with a stand-in for the conversion (~30 s, tested in
    # test_models.py): the mapping only reads what the build leaves (its completion marker)
    monkeypatch.setenv("TRL_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(default_mod, "_convert_model", lambda folder: (folder / "config.json").write_text("{}"))
    assert base_model_name(str(default_model_path())) == (DEFAULT_MODEL_HUB_ID, DEFAULT_MODEL_HUB_ID)
    assert base_model_name("org/model") == ("org/model", "org/model")
    (tmp_path / "my-model").mkdir()
    assert base_model_name(str(tmp_path / "my-model")) == ("my-model", None)
    assert base_model_name(None)[1] is None and base_model_name(None)[0]


def test_templates_live_in_the_top_level_model_cards_folder():
    assert MODEL_CARDS_DIR == REPO / "model_cards"  # a source checkout renders from the top-level folder
    assert {"_base.md", "rft.md", "process_grpo.md", "unified.md", "prm.md"} <= {p.name for p in MODEL_CARDS_DIR.iterdir()}
    assert not (REPO / "trl_ext" / "model_cards").exists()


def test_wheel_ships_the_model_card_templates_and_renders_a_card_when_installed(tmp_path):
    """Build the wheel from a clean copy of the sources (no stale build/ folder), unpack it as site-packages and
    render a card from the unpacked package in a fresh interpreter."""
    import shutil

    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("trl_ext", "model_cards"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True)
    wheel = next((tmp_path / "dist").glob("trl_ext-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (REPO / "model_cards").glob("*.md"):
        assert f"trl_ext/model_cards/{template.name}" in names
    missing = [str(p.relative_to(REPO)) for p in (REPO / "trl_ext").rglob("*.py")
               if "__pycache__" not in p.parts and str(p.relative_to(REPO)) not in names]
    assert not missing, f"modules missing from the wheel (add the subpackage to pyproject's packages): {missing}"
    assert "trl_ext/py.typed" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import json, trl_ext, trl_ext.model_card as mc\n"
        "text = mc.render_model_card('rft.md', card_data='license: apache-2.0', model_name='m', base_model='b',\n"
        "    base_model_md='[b](https://huggingface.co/b)', adapter_note=None, trainer_name='RFTTrainer',\n"
        "    dataset_name=None, peft=False, qlora=False, load_snippet='x', plot_file=None, hyperparameters={},\n"
        "    metrics={'reward': '0.5'}, eval_results=[], versions={'trl': '1'}, citation='c')\n"
        "print(json.dumps({'file': trl_ext.__file__, 'dir': str(mc.MODEL_CARDS_DIR), 'text': text}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["file"].startswith(str(site)) and res["dir"] == str(site / "trl_ext" / "model_cards")
    assert "## Method" in res["text"] and "clipped value loss" in res["text"] and "| `reward` | 0.5 |" in res["text"]
    assert res["text"].count("## Framework versions") == 1


def test_hyperparameter_cells_stay_on_one_table_row():
    from trl_ext.model_card import _format

    assert _format("\n\n") == "`'\\n\\n'`"  # ProcessGRPO's default step separator, shown escaped
    assert "\n" not in _format("a\nb") and _format("plain") == "plain"
    assert _format("a|b") == "a\\|b" and _format(["x", "y"]) == "`['x', 'y']`" and _format(0.25) == "0.25"
