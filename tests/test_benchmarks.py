"""The benchmark scripts run end to end on a tiny model (slow: they start many subprocesses).

The numbers themselves are measured by hand on the embedded model (benchmarks/README.md); these tests check that
each comparison runs both sides, alternates them, and reports finite ratios, and that the learning benchmark
evaluates at the requested points and stops at its wall-time budget.
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
    assert set(report["comparisons"]) == {"rft", "process", "pairs", "demos", "mixed"}
    for comp in report["comparisons"].values():
        assert len(comp["runs"]["trl_ext"]) == len(comp["runs"]["stock"]) == 2
        for metric in ("step_s", "tokens_per_s", "peak_rss_mib", "wall_s"):
            assert math.isfinite(comp["ratios"][metric]) and comp["ratios"][metric] > 0
    assert len(report["comparisons"]["mixed"]["runs"]["stock"][0]["stages"]) == 2  # SFT, then DPO


@pytest.mark.slow
def test_learning_benchmark_evaluates_and_stops_at_the_budget(tiny_model_path, tmp_path):
    for name in ("rft", "process_grpo", "grpo"):
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "bench_learning.py"), "--model", tiny_model_path,
             "--only", name, "--budget_s", "8", "--evals", "3", "--eval_size", "4", "--eval_max_new_tokens", "4",
             "--output_dir", str(tmp_path)],
            check=True, env=ENV, timeout=900, capture_output=True,
        )
        result = json.loads((tmp_path / f"{name}.json").read_text())
        curve = result["curve"]
        assert len(curve) == 3 and curve[0]["step"] == 0 and curve[-1]["train_seconds"] >= 8
        assert [p["train_seconds"] for p in curve] == sorted(p["train_seconds"] for p in curve)
        assert all(0.0 <= p["accuracy"] <= 1.0 for p in curve)
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_learning.py"), "--plot_only",
                    "--output_dir", str(tmp_path)], check=True, env=ENV, timeout=300)
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
