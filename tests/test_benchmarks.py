"""The benchmark scripts run end to end on a tiny model (slow: they start many subprocesses).

The numbers themselves are measured by hand on the embedded model (benchmarks/README.md); these tests check that
each comparison runs both sides, alternates them, and reports finite ratios, and that the learning benchmark
evaluates at the requested points, stops at its wall-time budget, summarises over seeds and resumes.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_compare_runs_every_comparison_side_by_side(tmp_path):
    out = tmp_path / "compare.json"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "compare.py"), "--model", "tiny", "--reps", "2",
         "--steps", "1", "--rows", "4", "--max_length", "256", "--max_completion_length", "8", "--threads", "1",
         "--out", str(out)],
        check=True, env=ENV, timeout=1800,
    )
    report = json.loads(out.read_text())
    assert set(report["comparisons"]) == {"rft", "process", "pairs", "demos", "mixed", "pairs_pf", "demos_pf"}
    for comp in report["comparisons"].values():
        assert len(comp["runs"]["trl_ext"]) == len(comp["runs"]["stock"]) == 2
        for metric in ("step_s", "tokens_per_s", "peak_rss_mib", "wall_s"):
            assert math.isfinite(comp["ratios"][metric]) and comp["ratios"][metric] > 0
    assert len(report["comparisons"]["mixed"]["runs"]["stock"][0]["stages"]) == 2  # SFT, then DPO


LEARNING = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_learning.py")]


def _benchmark_module(name: str):
    """benchmarks/<name>.py as a module, loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stats():
    """benchmarks/learning_stats.py as a module (nothing is added to sys.path)."""
    return _benchmark_module("learning_stats")


def test_learning_stats_t_interval_and_paired_comparison_by_hand():
    stats = _stats()
    r = stats.t_interval([0.3, 0.4, 0.5])  # sd 0.1, t_{0.975,2} = 4.3027: half-width 0.1 * 4.3027 / sqrt(3)
    assert math.isclose(r["lo"], 0.4 - 0.248417, abs_tol=1e-5) and math.isclose(r["hi"], 0.4 + 0.248417, abs_tol=1e-5)
    assert (r["min"], r["max"], r["n"]) == (0.3, 0.5, 3)
    # d = (0.1, 0.2, 0.1): mean 2/15, sd 0.057735, t = 4; df 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    c = stats.compare({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.4, 2: 0.6})
    assert math.isclose(c["diff"]["mean"], 2 / 15, rel_tol=1e-9)
    assert math.isclose(c["p_paired"], 2 * (0.5 - 4 / (2 * math.sqrt(18))), rel_tol=1e-6)
    assert "not significant" in stats.verdict(c)
    assert "significant at" in stats.verdict(stats.compare({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.3, 1: 0.41, 2: 0.5}))
    assert stats.t_interval([0.5])["lo"] is None


def test_learning_stats_step_diagnostics_by_hand():
    from trl_ext.rewards.process import ArithmeticStepVerifier

    texts = ["12 + 7 = 19\n19 - 4 = 16\n#### 16", "3 + 4 = 7\n#### 7", "no steps"]
    d = _stats().step_diagnostics(texts, [0.0, 1.0, 0.0], ArithmeticStepVerifier())
    assert d["steps_per_completion"] == 6 / 3 and d["claims_per_completion"] == 3 / 3
    assert d["correct_step_frac_wrong"] == 0.5 and d["correct_step_frac_right"] == 1.0  # 19-4=16 is false
    assert d["wrong_answers"] == 2


def test_learning_start_point_is_measured_once_per_task_and_settings(tmp_path):
    """The t = 0 evaluation is shared: the first run measures it, the rest read it; new settings redo it."""
    import torch

    bench = _benchmark_module("bench_learning")
    calls = []

    def measure(start):
        def go():
            calls.append(1)
            start.update(chosen=torch.tensor([-1.5, -2.0]), rejected=torch.tensor([-3.0, -1.0]))
            return {"preference_accuracy": 0.5}
        return go

    cfg = {"task_key": "gsm_symbolic", "eval_size": 2, "eval_seed": 0, "model_label": "m", "device": "cpu"}
    first, second = {}, {}
    assert bench.start_point(cfg, tmp_path / "gsm_symbolic__unified__seed0.json", measure(first), first) == {
        "preference_accuracy": 0.5}
    assert bench.start_point(cfg, tmp_path / "gsm_symbolic__sft_then_dpo__seed1.json", measure(second), second) == {
        "preference_accuracy": 0.5}
    assert len(calls) == 1 and torch.equal(second["chosen"], torch.tensor([-1.5, -2.0]))
    assert torch.equal(second["rejected"], torch.tensor([-3.0, -1.0]))
    bench.start_point({**cfg, "eval_size": 3}, tmp_path / "gsm_symbolic__unified__seed2.json", measure({}), {})
    assert len(calls) == 2  # other evaluation settings: measured again


@pytest.mark.slow
def test_learning_benchmark_smoke_preset_runs_every_cell_and_resumes(tmp_path):
    out = tmp_path / "learning"
    subprocess.run(LEARNING + ["--smoke", "--output_dir", str(out)], check=True, env=ENV, timeout=1800,
                   capture_output=True)
    runs = sorted(p.name for p in out.glob("*__seed*.json"))
    assert len(runs) == 2 * 9  # 2 seeds x (3 + 3 + rft_full + 2): RFT with LoRA on 2 terms is shared by two cells
    for path in out.glob("*__seed*.json"):
        record = json.loads(path.read_text())
        assert record["complete"] and record["curve"][0]["train_seconds"] == 0.0
        seconds = [p["train_seconds"] for p in record["curve"]]
        assert seconds == sorted(seconds) and seconds[-1] >= record["settings"]["budget_s"]
        assert record["settings"]["device"] == "cpu" and record["settings"]["precision"] == "fp32"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"process_steps", "process_easy", "lora_vs_full", "likelihood"}
    easy = summary["process_easy"]
    assert {(c["a"], c["b"]) for c in easy["comparisons"] if c["metric"] == "accuracy"} == {
        ("rft", "grpo"), ("rft", "process_grpo"), ("grpo", "process_grpo")}
    assert all(easy["metrics"]["accuracy"][m]["marks"][-1]["n"] == 2 for m in ("rft", "grpo", "process_grpo"))
    assert set(summary["likelihood"]["metrics"]) == {"answer_accuracy", "preference_accuracy", "reward_margin_accuracy"}
    for cell in summary:
        assert (out / f"{cell}.png").stat().st_size > 1000
    assert "95%" in (out / "summary.md").read_text()
    # resume: a run left incomplete (as if killed) is redone, nothing else; other settings are refused
    killed = out / "chain_sum_2__grpo__seed1.json"
    record = json.loads(killed.read_text())
    killed.write_text(json.dumps({**record, "complete": False, "curve": record["curve"][:1]}))
    again = subprocess.run(LEARNING + ["--smoke", "--output_dir", str(out), "--jobs", "1"], check=True, env=ENV,
                           timeout=900, capture_output=True, text=True)
    assert "18 runs planned, 17 already complete" in again.stdout and "measured 1 runs" in again.stdout
    assert json.loads(killed.read_text())["complete"]
    other = subprocess.run(LEARNING + ["--smoke", "--output_dir", str(out), "--budget_s", "4"], env=ENV,
                           timeout=900, capture_output=True, text=True)
    assert other.returncode != 0 and "measured with other settings" in other.stderr


def test_learning_records_without_warmup_steps_count_as_the_old_warm_up(tmp_path):
    """Records measured before --warmup_steps existed (with a 5-step warm-up) are reused at the default, and a rerun
    with another warm-up is refused instead of mixing the two in one table."""
    bench = _benchmark_module("bench_learning")
    base = {k: None for k in bench.FINGERPRINT} | {"budget_s": 90.0, "warmup_steps": 5}
    old = {k: v for k, v in base.items() if k != "warmup_steps"}
    path = tmp_path / "chain_sum_2__rft__seed0.json"
    path.write_text(json.dumps({"complete": True, "settings": old}))
    assert bench._todo(path, base, overwrite=False) is False
    with pytest.raises(SystemExit, match=r"'warmup_steps': \(5, 0\)"):
        bench._todo(path, base | {"warmup_steps": 0}, overwrite=False)
    assert bench._todo(path, base | {"warmup_steps": 0}, overwrite=True) is True
    assert bench.parse_args(["--warmup_steps", "0"]).warmup_steps == 0 and bench.parse_args([]).warmup_steps == 5
