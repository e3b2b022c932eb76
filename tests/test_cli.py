"""The ``trl-ext`` command and its dataset loading (issue 13, items 1-2).

Fast tests call the package scripts' ``make_parser``/``main`` in-process on the tiny model; the slow ones run the real
command (``python -m trl_ext.cli``, i.e. the ``trl-ext`` console script) in a subprocess, once under ``accelerate
launch`` with 2 gloo processes.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from trl_ext.cli.common import UsageError, resolve_reward_funcs
from trl_ext.cli.main import COMMANDS, main, resolve_accelerate_config, split_launch_args
from trl_ext.data import ANSWER_FORMAT_INSTRUCTION, demonstration_dataset, preference_dataset, rl_dataset
from trl_ext.data.loading import (
    DatasetLoadingError,
    load_dataset_splits,
    prepare_rl_dataset,
    prepare_unified_dataset,
)

REPO = Path(__file__).resolve().parents[1]
CPU_2PROC = REPO / "examples" / "accelerate_configs" / "cpu_2proc.yaml"


# ---------------------------------------------------------------------------------------------------- test data


def _question(prompt: str) -> str:
    """The bare question of a standard-format trl_ext.data prompt (without the answer-format instruction)."""
    return prompt.split("\n\n" + ANSWER_FORMAT_INSTRUCTION)[0]


_CLAIM = re.compile(r"(\d+(?:\.\d+)?(?:\s*[-+*/]\s*\d+(?:\.\d+)?)+)\s*=\s*(\d+(?:\.\d+)?)")


def gsm8k_rationale(cot: str) -> str:
    """A gsm_symbolic solution written like GSM8K's ``answer`` column: ``48/2 = <<48/2=24>>24`` calculator
    annotations, last line ``#### N``."""
    return _CLAIM.sub(lambda m: f"{m.group(1)} = <<{m.group(1).replace(' ', '')}={m.group(2)}>>{m.group(2)}", cot)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def gsm8k_jsonl(tmp_path_factory) -> Path:
    """12 rows in GSM8K's format: ``question``, ``answer`` = rationale with <<a*b=c>> annotations ending in #### N."""
    rows = []
    for row in rl_dataset("gsm_symbolic", 12, seed=0):
        cot = json.loads(row["metadata"])["answer_cot"]
        rows.append({"question": _question(row["prompt"]), "answer": gsm8k_rationale(cot)})
    assert sum("<<" in r["answer"] for r in rows) >= 6 and all(re.search(r"\n#### [\d.]+$", r["answer"]) for r in rows)
    return write_jsonl(tmp_path_factory.mktemp("gsm8k") / "gsm8k.jsonl", rows)


@pytest.fixture(scope="module")
def preference_jsonl(tmp_path_factory) -> Path:
    """8 preference pairs + 3 demonstrations (question, chosen/rejected or completion, answer) in one file."""
    rows = [{"question": _question(r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"], "answer": r["answer"]}
            for r in preference_dataset(8, seed=0)]
    rows += [{"question": _question(r["prompt"]), "completion": r["completion"], "answer": r["answer"]}
             for r in demonstration_dataset(3, seed=7)]
    return write_jsonl(tmp_path_factory.mktemp("prefs") / "prefs.jsonl", rows)


def test_gsm8k_rationale_format():
    cot = "Robert has 72*0.5=36 pebbles.\nThen 36+17=53.\n#### 53"
    assert gsm8k_rationale(cot) == "Robert has 72*0.5 = <<72*0.5=36>>36 pebbles.\nThen 36+17 = <<36+17=53>>53.\n#### 53"


# -------------------------------------------------------------------------------------------- loading: sources


ROWS = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]


def test_each_file_type_loads_as_the_train_split(tmp_path):
    ds = Dataset.from_list(ROWS)
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    ds.to_csv(tmp_path / "d.csv", index=False)
    ds.to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.json", "d.csv", "d.parquet"):
        train, test = load_dataset_splits(str(tmp_path / name))
        assert test is None, name
        assert list(train["question"]) == [r["question"] for r in ROWS], name
        assert [str(a) for a in list(train["answer"])] == [r["answer"] for r in ROWS], name  # csv reads ints


def test_save_to_disk_folders_and_data_folders(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    train, test = load_dataset_splits(str(tmp_path / "single"))
    assert len(train) == 6 and test is None

    DatasetDict({"train": Dataset.from_list(ROWS[:4]), "validation": Dataset.from_list(ROWS[4:])}).save_to_disk(
        str(tmp_path / "dict"))
    train, test = load_dataset_splits(str(tmp_path / "dict"), test_split="validation")
    assert len(train) == 4 and list(test["question"]) == [ROWS[4]["question"], ROWS[5]["question"]]

    folder = tmp_path / "files"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS[:5])
    write_jsonl(folder / "test.jsonl", ROWS[5:])
    train, test = load_dataset_splits(str(folder))
    assert len(train) == 5 and list(test["question"]) == [ROWS[5]["question"]]


def test_train_split_and_test_split_names(tmp_path):
    DatasetDict({"dev": Dataset.from_list(ROWS[:2]), "main": Dataset.from_list(ROWS[2:])}).save_to_disk(
        str(tmp_path / "dd"))
    train, test = load_dataset_splits(str(tmp_path / "dd"), train_split="main", test_split="dev")
    assert (len(train), len(test)) == (4, 2)
    with pytest.raises(DatasetLoadingError, match=r"no split 'train' \(--dataset_train_split\); its splits: \['dev', "
                                                  r"'main'\]"):
        load_dataset_splits(str(tmp_path / "dd"))
    with pytest.raises(DatasetLoadingError, match=r"no split 'test' \(--dataset_test_split\).*--dataset_test_size"):
        load_dataset_splits(str(tmp_path / "dd"), train_split="main", require_test=True)


def test_test_size_holds_out_disjoint_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    train, test = load_dataset_splits(str(path), test_size=2, seed=3)
    assert (len(train), len(test)) == (4, 2)
    assert sorted(list(train["question"]) + list(test["question"])) == sorted(r["question"] for r in ROWS)
    again = load_dataset_splits(str(path), test_size=2, seed=3)[1]
    assert list(again["question"]) == list(test["question"])  # seeded
    train, test = load_dataset_splits(str(path), test_size=0.5)
    assert (len(train), len(test)) == (3, 3)
    for bad in (0, 6, 1.5, -0.1, True):
        with pytest.raises(DatasetLoadingError, match="dataset_test_size"):
            load_dataset_splits(str(path), test_size=bad)


def test_hub_id_and_dataset_config_go_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return DatasetDict({"train": Dataset.from_list(ROWS[:3]), "test": Dataset.from_list(ROWS[3:])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    train, test = load_dataset_splits("openai/gsm8k", "main")
    assert calls == [("openai/gsm8k", "main")] and (len(train), len(test)) == (3, 3)


def test_unreachable_hub_id_is_a_clear_error():
    with pytest.raises(DatasetLoadingError, match="cannot load the dataset 'nobody-trl-ext/no-such-dataset'"):
        load_dataset_splits("nobody-trl-ext/no-such-dataset")


@pytest.mark.parametrize("content, suffix, message", [
    (None, ".jsonl", "no such file or folder"),
    ("", ".jsonl", "is empty"),
    ('{"question": "q", "answer": "1"}\nthis is not json\n', ".jsonl", "cannot read .* as json"),
    ("hello", ".txt", "unsupported file type '.txt'"),
    (b"PAR1 not really parquet", ".parquet", "cannot read .* as parquet"),
])
def test_unreadable_sources(tmp_path, content, suffix, message):
    path = tmp_path / f"data{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DatasetLoadingError, match=message):
        load_dataset_splits(str(path))


def test_missing_relative_path_is_not_looked_up_on_the_hub():
    with pytest.raises(DatasetLoadingError, match="no such file or folder: './nope'"):
        load_dataset_splits("./nope")


def test_empty_splits(monkeypatch):
    import datasets

    empty = Dataset.from_dict({"question": [], "answer": []})
    splits = {"a": {"train": empty, "test": Dataset.from_list(ROWS)}, "b": {"train": Dataset.from_list(ROWS),
                                                                           "test": empty}}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, **kw: DatasetDict(splits[path]))
    with pytest.raises(DatasetLoadingError, match="split 'train' of 'a' is empty"):
        load_dataset_splits("a")
    with pytest.raises(DatasetLoadingError, match=r"split 'test' \(--dataset_test_split\) of 'b' is empty"):
        load_dataset_splits("b")


# -------------------------------------------------------------------------------------------- loading: columns


def test_question_column_becomes_a_prompt_with_or_without_chat_template():
    ds = Dataset.from_list(ROWS[:2])
    chat = prepare_rl_dataset(ds)
    assert chat[0]["prompt"] == [{"role": "user", "content": f"What is 0 + 1?\n\n{ANSWER_FORMAT_INSTRUCTION}"}]
    plain = prepare_rl_dataset(ds, conversational=False, instruction="")
    assert plain[0]["prompt"] == "What is 0 + 1?\n"
    system = prepare_rl_dataset(ds, system_prompt="Be brief.", instruction="Answer with a number.")
    assert system[1]["prompt"] == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "What is 1 + 1?\n\nAnswer with a number."}]
    assert list(chat["answer"]) == ["1", "2"] and list(chat["question"]) == ["What is 0 + 1?", "What is 1 + 1?"]


def test_prompt_column_is_kept_as_is_and_custom_columns_are_mapped():
    ds = Dataset.from_dict({"prompt": ["Already formatted: 2+2=\n"], "answer": ["4"]})
    assert prepare_rl_dataset(ds)[0]["prompt"] == "Already formatted: 2+2=\n"
    ds = Dataset.from_dict({"problem": ["3 * 3?"], "final": [9], "answer": ["long rationale"]})
    row = prepare_rl_dataset(ds, prompt_column="problem", answer_column="final", instruction="",
                             conversational=False)[0]
    assert row["prompt"] == "3 * 3?\n" and row["answer"] == "9" and row["answer_original"] == "long rationale"


def test_gsm8k_reference_is_kept_whole(gsm8k_jsonl):
    train, _ = load_dataset_splits(str(gsm8k_jsonl))
    rows = prepare_rl_dataset(train)
    assert rows[0]["answer"] == json.loads(gsm8k_jsonl.read_text().splitlines()[0])["answer"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt_column="problem"), r"column 'problem' \(--prompt_column\) is not in the train dataset; its columns: "
                                    r"\['question', 'answer'\]"),
    (dict(answer_column="solution"), r"column 'solution' \(--answer_column\) is not in the train dataset"),
])
def test_missing_rl_columns(kwargs, message):
    with pytest.raises(DatasetLoadingError, match=message):
        prepare_rl_dataset(Dataset.from_list(ROWS), **kwargs)


def test_no_prompt_column_and_empty_rows():
    with pytest.raises(DatasetLoadingError, match="neither a 'prompt' nor a 'question' column.*--prompt_column"):
        prepare_rl_dataset(Dataset.from_dict({"text": ["x"], "answer": ["1"]}))
    with pytest.raises(DatasetLoadingError, match=r"row 1 of the test dataset has an empty reference \(column "
                                                  r"'answer'"):
        prepare_rl_dataset(Dataset.from_dict({"question": ["a", "b"], "answer": ["1", " "]}), name="test")
    with pytest.raises(DatasetLoadingError, match="row 0 of the train dataset has an empty prompt"):
        prepare_rl_dataset(Dataset.from_dict({"question": [""], "answer": ["1"]}))


def test_unified_columns_mapping_and_errors():
    ds = Dataset.from_dict({"q": ["2 + 2?"], "good": ["#### 4"], "bad": ["#### 5"]})
    row = prepare_unified_dataset(ds, prompt_column="q", chosen_column="good", rejected_column="bad", instruction="")[0]
    assert row["prompt"] == [{"role": "user", "content": "2 + 2?"}]
    assert row["chosen"] == [{"role": "assistant", "content": "#### 4"}]
    assert row["rejected"] == [{"role": "assistant", "content": "#### 5"}]
    plain = prepare_unified_dataset(Dataset.from_dict({"question": ["1+1?"], "answer": ["2"]}),
                                    completion_column="answer", conversational=False, instruction="")[0]
    assert plain["prompt"] == "1+1?\n" and plain["completion"] == "2"
    with pytest.raises(DatasetLoadingError, match=r"column 'good' \(--chosen_column\) is not in"):
        prepare_unified_dataset(Dataset.from_dict({"question": ["x"], "completion": ["y"]}), chosen_column="good")
    with pytest.raises(DatasetLoadingError, match="no 'completion' column and no 'chosen' \\+ 'rejected' pair"):
        prepare_unified_dataset(Dataset.from_dict({"question": ["x"], "chosen": ["y"]}))
    for flag in ("completion_column", "rejected_column"):
        with pytest.raises(DatasetLoadingError, match=f"--{flag}"):
            prepare_unified_dataset(Dataset.from_dict({"question": ["x"], "chosen": ["y"]}), **{flag: "nope"})


# ---------------------------------------------------------------------------------------------- reward functions


def test_reward_funcs_by_name_path_and_class():
    from trl.rewards import accuracy_reward

    from trl_ext.rewards import FormatGrader, NumericMatch

    funcs = resolve_reward_funcs(["NumericMatch", "accuracy_reward", "trl_ext.rewards.FormatGrader"])
    assert isinstance(funcs[0], NumericMatch) and funcs[1] is accuracy_reward and isinstance(funcs[2], FormatGrader)
    assert funcs[0](prompts=["q"], completions=["#### 12"], answer=["12"]) == [1.0]
    from trl_ext import rewards

    assert resolve_reward_funcs(["numeric_match"]) == [rewards.numeric_match]  # module-level grader functions too
    with pytest.raises(UsageError, match="unknown reward function 'NoSuchGrader'"):
        resolve_reward_funcs(["NoSuchGrader"])
    with pytest.raises(UsageError, match="cannot import module 'no_such_module_xyz'"):
        resolve_reward_funcs(["no_such_module_xyz.reward"])
    with pytest.raises(UsageError, match="has no attribute 'nope'"):
        resolve_reward_funcs(["trl_ext.rewards.nope"])
    with pytest.raises(UsageError, match="not callable"):
        resolve_reward_funcs(["trl_ext.data.ANSWER_FORMAT_INSTRUCTION"])


# ------------------------------------------------------------------------------------------- parser and launch


@pytest.mark.parametrize("command, groups", [
    ("rft", [">>> RFTConfig (trl_ext)", ">>> RLDataArguments (trl_ext)", ">>> RFTScriptArguments (trl_ext)"]),
    ("process-grpo", [">>> ProcessGRPOConfig (trl_ext)", ">>> RLDataArguments (trl_ext)"]),
    ("unified", [">>> UnifiedLikelihoodConfig (trl_ext)", ">>> UnifiedDataArguments (trl_ext)"]),
])
def test_help_groups_our_options(command, groups, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: trl-ext {command}")
    for group in groups + [">>> DataArguments (trl_ext)", "ScriptArguments (trl)", "ModelConfig (trl)",
                           "TrainingArguments (transformers)", "--accelerate_config"]:
        assert group in out, group
    # each of our fields is in our group, not in the inherited ones: the RFT value-loss knob sits under RFTConfig
    if command == "rft":
        options = out.split("\noptions:")[1]  # past the usage line
        before, ours = options.split(">>> RFTConfig (trl_ext)")
        assert "--vf_coef" in ours.split("ModelConfig (trl)")[0] and "--vf_coef" not in before
        assert "--dataset_name" in options.split("ScriptArguments (trl)")[1].split(">>>")[0]


def test_prm_help_groups_our_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prm", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: trl-ext prm")
    options = out.split("\noptions:")[1]
    ours = options.split(">>> PRMConfig (trl_ext)")[1].split("TrainingArguments (transformers)")[0]
    assert "--step_separator" in ours and "--train_on_last_step_only" in ours
    assert ">>> ScriptArguments (script)" in out or ">>> ScriptArguments (trl_ext)" in out
    assert "--train_top_layers" in out and "--accelerate_config" in out


@pytest.mark.slow
def test_prm_command_trains_and_writes_results(tiny_model_path, tmp_path):
    out = tmp_path / "prm"
    _cli("prm", "--model_name_or_path", tiny_model_path, "--max_steps", "1", "--train_size", "8", "--eval_size", "4",
         "--train_top_layers", "1", "--output_dir", str(out))
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"untrained", "trained", "arithmetic_verifier", "all_correct"}
    assert (out / "config.json").is_file() and (out / "README.md").is_file()


def test_top_level_help_and_env(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ("rft", "process-grpo", "unified", "prm", "env"):
        assert name in out
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("trl_ext version: 0.1.0", "TRL version: ", "PyTorch version: ", "Transformers version: ",
                "Accelerate config: ", "reasoning-gym version: "):
        assert key in out, key


def test_launch_flags_are_split_from_script_flags(tmp_path):
    command = next(c for c in COMMANDS if c.name == "rft")
    config = tmp_path / "rft.yaml"
    config.write_text("max_steps: 3\nnum_machines: 1\n")  # num_machines is no script field: an accelerate flag
    launch, script = split_launch_args(command, [
        "--config", str(config), "--num_processes", "2", "--accelerate_config", str(CPU_2PROC), "--max_steps", "1",
        "--dataset_name", "x.jsonl"])
    assert launch == ["--config_file", str(CPU_2PROC), "--num_machines", "1", "--num_processes", "2"]
    assert script == ["--config", str(config), "--max_steps", "1", "--dataset_name", "x.jsonl"]
    assert command.script_path().is_file() and command.script_path().name == "rft.py"


def test_accelerate_config_names():
    import trl

    resolved = resolve_accelerate_config(["--accelerate_config", "multi_gpu", "--num_processes", "2"])
    assert resolved == ["--config_file", str(Path(trl.__file__).parent / "accelerate_configs" / "multi_gpu.yaml"),
                        "--num_processes", "2"]
    with pytest.raises(SystemExit, match="neither a file nor a config shipped with TRL .*zero3"):
        resolve_accelerate_config(["--accelerate_config", "no_such_config"])


def test_bad_flag_fails_in_the_parent_before_launching():
    with pytest.raises(SystemExit) as exit_info:  # argparse: "invalid int value: 'two'"
        split_launch_args(COMMANDS[0], ["--max_steps", "two"])
    assert exit_info.value.code == 2


# ------------------------------------------------------------------------------------ training (in-process, tiny)


def _rft(tiny_model_path, out, *extra):
    from trl_ext.cli.scripts.rft import main as rft_main, make_parser

    args = make_parser().parse_args_and_config([
        "--model_name_or_path", tiny_model_path, "--output_dir", str(out), "--max_steps", "2", "--logging_steps", "1",
        "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", "--max_completion_length", "8",
        "--eval_max_new_tokens", "8", "--eval_size", "2", "--use_peft", "false", *extra])
    return rft_main(*args)


def _finite(value) -> bool:
    return value is not None and not math.isnan(value)


def test_rft_on_a_gsm8k_jsonl_with_eval(tiny_model_path, gsm8k_jsonl, tmp_path):
    summary = _rft(tiny_model_path, tmp_path / "out", "--dataset_name", str(gsm8k_jsonl), "--dataset_test_size", "2",
                   "--eval_strategy", "steps", "--eval_steps", "1", "--max_train_samples", "6")
    log = json.loads((tmp_path / "out" / "rft_summary.json").read_text())
    assert summary["dataset"] == str(gsm8k_jsonl) and summary["task"] is None and log["steps"] == 2
    history = _history(tmp_path / "out")
    train_logs = [e for e in history if "reward" in e]
    assert len(train_logs) == 2
    for entry in train_logs:  # the graders scored the GSM8K references: rewards are numbers, not None/NaN
        assert _finite(entry["rewards/numeric_match/mean"]) and _finite(entry["reward"])
    eval_logs = [e for e in history if "eval_reward" in e]
    assert len(eval_logs) == 2  # --eval_steps 1 over 2 steps
    for entry in eval_logs:
        assert _finite(entry["eval_reward"]) and _finite(entry["eval_vf_loss"]) and entry["eval_vf_loss"] > 0
    assert summary["accuracy_before"] is not None  # the held-out accuracy ran on the test split


def _history(out_dir: Path) -> list[dict]:
    state = sorted(out_dir.glob("checkpoint-*/trainer_state.json"))
    if state:
        return json.loads(state[-1].read_text())["log_history"]
    return json.loads((out_dir / "log_history.json").read_text())


@pytest.fixture(autouse=True)
def _save_log_history(monkeypatch):
    """Write each trainer's log history next to its outputs (the scripts save no checkpoint with save_strategy=no)."""
    from transformers import Trainer

    original = Trainer.train

    def train(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            Path(self.args.output_dir, "log_history.json").write_text(json.dumps(self.state.log_history))
        return result

    monkeypatch.setattr(Trainer, "train", train)


@pytest.mark.parametrize("command", ["rft", "process_grpo"])
def test_prompt_options_reach_the_reasoning_gym_task(command):
    """--system_prompt / --answer_instruction shape a reasoning-gym task's prompts too (they were dropped before)."""
    import importlib

    script = importlib.import_module(f"trl_ext.cli.scripts.{command}")
    flags = ["--system_prompt", "Be brief.", "--answer_instruction", "Answer as #### <n>.", "--train_size", "4",
             "--eval_size", "2", "--output_dir", "unused"]
    script_args, training_args = script.make_parser().parse_args_and_config(args=flags)[:2]
    train, _, heldout, _ = script.build_datasets(script_args, training_args)
    for prompt in list(train["prompt"]) + list(heldout["prompt"]):
        assert prompt[0] == {"role": "system", "content": "Be brief."}
        assert prompt[1]["content"].endswith("\n\nAnswer as #### <n>.") and ANSWER_FORMAT_INSTRUCTION not in str(prompt)


@pytest.mark.parametrize("command", ["rft", "process_grpo"])
def test_task_config_reaches_the_reasoning_gym_task(command):
    """--task_config (JSON) shapes the task's prompts in both RL commands; a bad value fails before any model loads."""
    import importlib

    script = importlib.import_module(f"trl_ext.cli.scripts.{command}")
    parser = script.make_parser()
    flags = ["--train_size", "6", "--eval_size", "3", "--output_dir", "unused"]
    config = '{"min_terms": 5, "max_terms": 5, "min_digits": 1, "max_digits": 1}'
    script_args, training_args = parser.parse_args_and_config(args=flags + ["--task_config", config])[:2]
    train, _, heldout, _ = script.build_datasets(script_args, training_args)
    for row in list(train) + list(heldout):
        assert json.loads(row["metadata"])["expression"].count(" ") == 8  # 5 one-digit terms, 4 signs
    for bad, message in [("{min_terms: 5}", "--task_config is not valid JSON"),
                         ("[5]", "--task_config must be a JSON object")]:
        script_args, training_args = parser.parse_args_and_config(args=flags + ["--task_config", bad])[:2]
        with pytest.raises(DatasetLoadingError, match=message):
            script.build_datasets(script_args, training_args)


@pytest.mark.parametrize("command", ["rft", "process_grpo"])
def test_the_commands_chain_sum_config_stays_off_other_tasks(command):
    """The commands' default chain_sum config (terms, digits) is not passed to another --task (it has no such keys)."""
    import importlib

    script = importlib.import_module(f"trl_ext.cli.scripts.{command}")
    script_args, training_args = script.make_parser().parse_args_and_config(
        args=["--task", "basic_arithmetic", "--train_size", "3", "--eval_size", "2", "--output_dir", "unused"])[:2]
    train, _, heldout, name = script.build_datasets(script_args, training_args)
    assert name == "basic_arithmetic" and len(train) == 3 and len(heldout) == 2
    if command == "process_grpo":  # nor its chain_sum instruction: the package's answer format
        assert all(row["prompt"][-1]["content"].endswith(ANSWER_FORMAT_INSTRUCTION) for row in train)


def test_process_grpo_defaults_ask_for_checkable_steps():
    """The process-grpo example's task: chain_sum with 2 terms and the one-partial-sum-per-line instruction."""
    from trl_ext.cli.scripts import process_grpo
    from trl_ext.data import PARTIAL_SUMS_INSTRUCTION

    script_args, training_args = process_grpo.make_parser().parse_args_and_config(
        args=["--train_size", "4", "--eval_size", "2", "--output_dir", "unused"])[:2]
    train, _, heldout, name = process_grpo.build_datasets(script_args, training_args)
    assert name == "chain_sum" and len(heldout) == 2
    for row in train:
        assert row["prompt"][0] == {"role": "system", "content": ""}
        assert row["prompt"][1]["content"].endswith(PARTIAL_SUMS_INSTRUCTION)
        assert json.loads(row["metadata"])["num_terms"] == 2
    assert script_args.answer_instruction is None  # resolved for the data, the user's arguments left as given


def test_process_grpo_answer_instruction_flag_wins_on_chain_sum():
    """--answer_instruction replaces the command's chain_sum instruction; '' appends none."""
    from trl_ext.cli.scripts import process_grpo

    for flag in ("Sum it. #### <n>", ""):
        script_args, training_args = process_grpo.make_parser().parse_args_and_config(
            args=["--answer_instruction", flag, "--train_size", "2", "--eval_size", "0", "--output_dir", "unused"])[:2]
        train = process_grpo.build_datasets(script_args, training_args)[0]
        for row in train:
            content = row["prompt"][1]["content"]
            assert "partial sum" not in content and content.count("####") == int(bool(flag)), content
            assert content.endswith("\n\nSum it. #### <n>") if flag else "\n\n" not in content, content


def test_rft_defaults_to_the_reasoning_gym_task(tiny_model_path, tmp_path):
    summary = _rft(tiny_model_path, tmp_path / "out", "--train_size", "4", "--max_steps", "1")
    assert summary["task"] == "chain_sum" and summary["dataset"] is None and summary["steps"] == 1


def test_rft_eval_on_the_default_task(tiny_model_path, tmp_path):
    _rft(tiny_model_path, tmp_path / "out", "--train_size", "4", "--max_steps", "1", "--eval_strategy", "steps",
         "--eval_steps", "1", "--eval_size", "2", "--format_reward_weight", "0")
    assert any("eval_vf_loss" in e for e in _history(tmp_path / "out"))


def test_rft_named_test_split_and_reward_funcs(tiny_model_path, gsm8k_jsonl, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    lines = gsm8k_jsonl.read_text().splitlines()
    (folder / "train.jsonl").write_text("\n".join(lines[:6]) + "\n")
    (folder / "validation.jsonl").write_text("\n".join(lines[6:9]) + "\n")
    summary = _rft(tiny_model_path, tmp_path / "out", "--dataset_name", str(folder), "--dataset_test_split", "validation",
                   "--eval_strategy", "steps", "--eval_steps", "2", "--reward_funcs", "ExactMatch",
                   "--format_reward_weight", "0", "--max_eval_samples", "2", "--no_conversational")
    history = _history(tmp_path / "out")
    assert summary["eval_size"] == 2 and any("eval_rewards/exact_match/mean" in e for e in history)


def test_rft_with_a_reward_model(tiny_model_path, gsm8k_jsonl, tmp_path):
    """--reward_model_name_or_path adds a sequence-classification reward model to the graders."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from trl_ext.models import tiny_config

    torch.manual_seed(0)
    LlamaForSequenceClassification(tiny_config(num_labels=1)).save_pretrained(tmp_path / "my-rm")
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(tmp_path / "my-rm")
    _rft(tiny_model_path, tmp_path / "out", "--dataset_name", str(gsm8k_jsonl), "--max_steps", "1",
         "--reward_model_name_or_path", str(tmp_path / "my-rm"), "--format_reward_weight", "0", "--eval_size", "0")
    logged = [e for e in _history(tmp_path / "out") if "reward" in e][0]
    assert _finite(logged["rewards/numeric_match/mean"]) and _finite(logged["rewards/my-rm/mean"])


def test_streaming_is_refused_before_the_model_loads(gsm8k_jsonl, tmp_path):
    from trl_ext.cli.scripts.unified import main as unified_main, make_parser

    args = make_parser().parse_args_and_config([
        "--model_name_or_path", str(tmp_path / "no-model-here"), "--dataset_name", str(gsm8k_jsonl),
        "--dataset_streaming", "--completion_column", "answer", "--output_dir", str(tmp_path)])
    with pytest.raises(DatasetLoadingError, match="--dataset_streaming is not supported"):
        unified_main(*args)


def test_eval_without_a_test_split_fails_before_the_model_loads(gsm8k_jsonl, tmp_path):
    from trl_ext.cli.scripts.rft import main as rft_main, make_parser

    args = make_parser().parse_args_and_config([
        "--model_name_or_path", str(tmp_path / "no-model-here"), "--dataset_name", str(gsm8k_jsonl),
        "--eval_strategy", "steps", "--output_dir", str(tmp_path)])
    with pytest.raises(DatasetLoadingError, match="evaluation needs a test split"):
        rft_main(*args)


def test_process_grpo_on_a_gsm8k_jsonl_with_eval(tiny_model_path, gsm8k_jsonl, tmp_path):
    from trl_ext.cli.scripts.process_grpo import main as pg_main, make_parser

    out = tmp_path / "out"
    args = make_parser().parse_args_and_config([
        "--model_name_or_path", tiny_model_path, "--output_dir", str(out), "--max_steps", "2",
        "--dataset_name", str(gsm8k_jsonl), "--dataset_test_size", "2", "--eval_strategy", "steps", "--eval_steps", "1",
        "--per_device_train_batch_size", "4", "--num_generations", "2", "--per_device_eval_batch_size", "2",
        "--max_completion_length", "8", "--eval_size", "2", "--eval_max_new_tokens", "8"])
    results = pg_main(*args)
    assert results["trainer"] == "ProcessGRPOTrainer" and results["data"] == str(gsm8k_jsonl)
    train_logs = [e for e in results["log_history"] if "reward" in e]
    assert len(train_logs) == 2 and all(_finite(e["rewards/answer/mean"]) for e in train_logs)
    eval_logs = [e for e in results["log_history"] if "eval_reward" in e]
    assert len(eval_logs) == 2 and all(_finite(e["eval_rewards/answer/mean"]) for e in eval_logs)


def test_process_grpo_with_a_prm_folder(tiny_model_path, tmp_path):
    """--prm <folder>: a token-classification PRM's P(correct) per step is the process reward (a random tiny one)."""
    import torch
    from transformers import AutoTokenizer, LlamaForTokenClassification

    from trl_ext.cli.scripts.process_grpo import main as pg_main, make_parser
    from trl_ext.models import tiny_config

    torch.manual_seed(0)
    prm = LlamaForTokenClassification(tiny_config(num_labels=2, id2label={0: "wrong", 1: "correct"},
                                                  label2id={"wrong": 0, "correct": 1}))
    prm.save_pretrained(tmp_path / "prm")
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(tmp_path / "prm")
    args = make_parser().parse_args_and_config([
        "--model_name_or_path", tiny_model_path, "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
        "--prm", str(tmp_path / "prm"), "--train_size", "4", "--skip_eval", "--per_device_train_batch_size", "4",
        "--num_generations", "2", "--max_completion_length", "16", "--temperature", "1.0"])
    results = pg_main(*args)
    assert results["process_reward"] == "prm"
    step_rewards = [e["process/step_reward_mean"] for e in results["log_history"] if "process/step_reward_mean" in e]
    assert step_rewards and 0.0 < step_rewards[0] < 1.0  # a probability from the PRM, not a verifier fraction


def test_unified_on_a_preference_jsonl_with_eval(tiny_model_path, preference_jsonl, tmp_path):
    from trl_ext.cli.scripts.unified import main as unified_main, make_parser

    out = tmp_path / "out"
    args = make_parser().parse_args_and_config([
        "--model_name_or_path", tiny_model_path, "--output_dir", str(out), "--max_steps", "2",
        "--dataset_name", str(preference_jsonl), "--dataset_test_size", "3", "--eval_strategy", "steps",
        "--eval_steps", "1", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
        "--max_length", "256", "--num_eval", "3", "--skip_answer_accuracy", "--logging_steps", "1"])
    results = unified_main(*args)
    assert results["train_rows"]["demonstration"] + results["train_rows"]["preference"] == 8
    history = _history(out)
    eval_logs = [e for e in history if "eval_loss" in e and "eval_runtime" in e]
    assert len(eval_logs) >= 2
    for entry in eval_logs:
        assert _finite(entry["eval_loss"]) and 0.0 <= entry["eval_rewards/accuracies"] <= 1.0
    train_logs = [e for e in history if "loss" in e]
    assert train_logs and all(_finite(e["loss"]) for e in train_logs)
    assert results["heldout_implicit_reward_accuracy"] is not None
    assert "preference_accuracy" in results["before"]  # the test split's pairs


def test_unified_gsm8k_as_demonstrations(tiny_model_path, gsm8k_jsonl, tmp_path):
    from trl_ext.cli.scripts.unified import main as unified_main, make_parser

    args = make_parser().parse_args_and_config([
        "--model_name_or_path", tiny_model_path, "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
        "--dataset_name", str(gsm8k_jsonl), "--completion_column", "answer", "--loss_type", "sft",
        "--per_device_train_batch_size", "2", "--max_length", "256", "--skip_answer_accuracy",
        "--max_train_samples", "4"])
    results = unified_main(*args)
    assert results["train_rows"] == {"demonstration": 4, "preference": 0}


def test_unified_reward_margin_accuracy_equals_dpo_eval_accuracy(tiny_model_path, tmp_path):
    """The held-out reward-margin accuracy of `trl-ext unified` (before/after log-probs, the reference being the policy
    before training) is DPO's implicit-reward accuracy: TRL's `eval_rewards/accuracies` on the same pairs."""
    from trl_ext.cli.scripts.unified import main as unified_main, make_parser

    args = make_parser().parse_args_and_config([
        "--model_name_or_path", tiny_model_path, "--output_dir", str(tmp_path / "out"), "--max_steps", "3",
        "--num_demonstrations", "4", "--num_pairs", "4", "--num_eval", "8", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8", "--learning_rate", "5e-3", "--max_length", "256",
        "--eval_strategy", "steps", "--eval_steps", "100"])  # the trainer gets the held-out pairs: evaluate() at end
    results = unified_main(*args)
    margin_accuracy = results["after"]["reward_margin_accuracy"]
    assert "reward_margin_accuracy" not in results["before"] and "answer_accuracy" not in results["after"]
    assert results["heldout_implicit_reward_accuracy"] == pytest.approx(margin_accuracy, abs=1e-6)
    assert 0.0 <= margin_accuracy <= 1.0 and margin_accuracy * 8 == pytest.approx(round(margin_accuracy * 8))


def test_examples_are_thin_copies_of_the_package_scripts():
    import importlib.util

    for name, module_name in (("rft", "rft"), ("process_grpo", "process_grpo"), ("unified", "unified")):
        spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        package = __import__(f"trl_ext.cli.scripts.{module_name}", fromlist=["main"])
        assert module.main is package.main and module.make_parser is package.make_parser


# ------------------------------------------------------------------------------------ the real command (slow)


def _cli(*args, timeout=900, check=True, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "trl_ext.cli", *args], env=env, capture_output=True, text=True,
                            timeout=timeout, cwd=cwd or REPO)
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_cli_data_error_is_one_line_and_no_model_is_loaded(gsm8k_jsonl, tmp_path):
    result = _cli("rft", "--model_name_or_path", str(tmp_path / "no-model-here"), "--dataset_name", str(gsm8k_jsonl),
                  "--answer_column", "final_answer", "--output_dir", str(tmp_path / "out"), check=False)
    assert result.returncode == 2
    assert ("trl-ext rft: error: column 'final_answer' (--answer_column) is not in the train dataset; its columns: "
            "['question', 'answer']") in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["rft", "process-grpo", "unified"])
def test_cli_trains_on_a_local_jsonl(command, tiny_model_path, gsm8k_jsonl, preference_jsonl, tmp_path):
    out = tmp_path / "out"
    common = ["--model_name_or_path", tiny_model_path, "--output_dir", str(out), "--max_steps", "2",
              "--logging_steps", "1", "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
              "--save_steps", "2", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2"]
    if command == "unified":
        extra = ["--dataset_name", str(preference_jsonl), "--dataset_test_size", "3", "--max_length", "256",
                 "--skip_answer_accuracy"]
    else:
        extra = ["--dataset_name", str(gsm8k_jsonl), "--dataset_test_size", "2", "--max_completion_length", "8",
                 "--eval_size", "2", "--eval_max_new_tokens", "8"]
        if command == "process-grpo":
            extra += ["--num_generations", "2"]
    _cli(command, *common, *extra)
    history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    if command == "unified":
        assert any("eval_rewards/accuracies" in e for e in history)
        assert all(_finite(e["loss"]) for e in history if "loss" in e)
    else:
        rewards = [e["reward"] for e in history if "reward" in e]
        assert len(rewards) == 2 and all(_finite(r) for r in rewards)
        assert len([e for e in history if "eval_reward" in e]) == 2
        if command == "rft":
            assert all(_finite(e["eval_vf_loss"]) for e in history if "eval_reward" in e)


@pytest.mark.slow
def test_cli_under_accelerate_two_cpu_processes(tiny_model_path, gsm8k_jsonl, tmp_path):
    out = tmp_path / "out"
    result = _cli("rft", "--accelerate_config", str(CPU_2PROC), "--main_process_port", "0",
                  "--model_name_or_path", tiny_model_path, "--output_dir", str(out), "--max_steps", "2",
                  "--dataset_name", str(gsm8k_jsonl), "--dataset_test_size", "4", "--eval_strategy", "steps",
                  "--eval_steps", "2", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
                  "--max_completion_length", "8", "--eval_size", "2", "--eval_max_new_tokens", "8",
                  "--logging_steps", "1")
    assert "world_size=2" in result.stdout + result.stderr
    summary = json.loads((out / "rft_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2 and _finite(summary["reward_last"])
    assert _finite(summary["eval_metrics"]["eval_vf_loss"])


def test_console_script_is_declared():
    import tomllib

    from trl_ext.cli import main as entry_point

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["trl-ext"] == "trl_ext.cli:main" and entry_point is main
