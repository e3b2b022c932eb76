"""Atomic checkpoints and exact resume under SIGKILL (issue 14, item 2 and "Done when").

Fast: a save interrupted inside a checkpoint leaves no ``checkpoint-N`` folder, only its staging sibling
``_checkpoint-N.tmp-<host>-<pid>``, which the next ``train`` removes (never a live process's); a failed save (an
exception) leaves nothing; the resumed run equals the uninterrupted one.

Slow: for RFT, RFT with ``steps_per_generation=2``, ProcessGRPO and Unified, a training process
(tests/scripts/kill_train.py, 2 epochs, a checkpoint every step, each save slowed in its middle) is SIGKILLed at >= 10
seeded random moments — half aimed inside checkpoint saves, half inside a step's generation / update (each kind
hit at least twice) — and restarted with
``resume_from_checkpoint=True`` each time; after every kill each ``checkpoint-N`` on disk is complete, and the final
policy (and value head, beta) are bit-identical to an uninterrupted run. The processes are forked from a forkserver
that imported the training module once, so a restart costs the trainer set-up, not the imports.
"""

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from trl_ext.trainers.rft import RFTConfig, RFTTrainer

from helpers import PROMPTS, SCRIPTS, free_port



class _Killed(BaseException):
    """Stands for a SIGKILL: nothing after the raise runs (the files on disk are what a kill leaves)."""


def _reward(completions, **kwargs):
    return [len(set(str(c))) / 10.0 for c in completions]


def _rft(model, out, **overrides):
    kwargs = dict(output_dir=str(out), per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
                  max_steps=3, save_steps=1, logging_steps=1, learning_rate=1e-3, report_to="none",
                  save_strategy="steps", use_cpu=True, bf16=False, seed=0, disable_tqdm=True, beta=0.1,
                  kl_target=0.5, value_head_learning_rate=1e-2, validate_reward_funcs=False)
    kwargs.update(overrides)
    return RFTTrainer(model=model, reward_funcs=_reward, args=RFTConfig(**kwargs),
                      train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def _staging(out):
    return sorted(p.name for p in Path(out).glob("_checkpoint-*"))


def test_interrupted_save_leaves_no_checkpoint_folder_and_next_run_cleans_up(tiny_model_path, tmp_path):
    """Checkpoint saves called directly (no training): a complete one, one killed inside, one failing, one best."""
    run = tmp_path / "run"
    trainer = _rft(tiny_model_path, run, max_steps=1)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    original = trainer._save_optimizer_and_scheduler

    def save_at(step, failure=None):
        def save(output_dir):
            if failure is not None:  # model, value head and rft_state.json are written; optimizer not yet
                raise failure
            original(output_dir)

        trainer._save_optimizer_and_scheduler = save
        trainer.state.global_step = step
        trainer._save_checkpoint(trainer.model, None)

    save_at(1)
    with pytest.raises(_Killed):
        save_at(2, _Killed())
    with pytest.raises(OSError, match="No space left"):
        save_at(3, OSError(28, "No space left on device"))
    trainer.state.best_global_step = 4
    save_at(4)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-4"]
    for step in (1, 4):
        state = json.loads((run / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["global_step"] == step
        assert (run / f"checkpoint-{step}" / "optimizer.pt").is_file()
    # the Trainer records best_model_checkpoint when the best step is the one saved: the final path, never staging
    assert state["best_model_checkpoint"] == str(run / "checkpoint-4")
    (staging,) = _staging(run)  # the killed save's; the failed one removed its own
    assert staging.startswith("_checkpoint-2.tmp-") and staging.endswith(f"-{os.getpid()}")
    assert (run / staging / "model.safetensors").is_file() and (run / staging / "value_head.safetensors").is_file()
    assert not (run / staging / "trainer_state.json").exists()

    # the next train() removes it; staging folders of a live process (our parent) or of another host stay
    host = staging.split(".tmp-")[1].rsplit("-", 1)[0]
    live, other_host = run / f"_checkpoint-9.tmp-{host}-{os.getppid()}", run / "_checkpoint-9.tmp-another_host-1"
    live.mkdir()
    other_host.mkdir()
    with pytest.warns(UserWarning, match=rf"removed .*{staging}, the unfinished checkpoint save"):
        trainer.train(resume_from_checkpoint=True)  # checkpoint-4 is past max_steps: nothing is trained
    assert _staging(run) == sorted([live.name, other_host.name])
    assert trainer.state.global_step == 4


# ---- slow: SIGKILL at random moments, restart with resume_from_checkpoint=True ------------------------------------

KILLS = 10
SAVE_DELAY = 0.4
"""Seconds each save sleeps in its middle (after the model and value head, before the optimizer)."""
REQUIRED = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


@pytest.fixture(scope="module")
def forkserver():
    with pytest.MonkeyPatch.context() as mp:  # tests/scripts/ on sys.path for this module's tests only
        mp.syspath_prepend(str(SCRIPTS))
        import kill_train

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["kill_train"])
        yield ctx, kill_train


def _events(path, attempt):
    if not path.is_file():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(float(w[1]), w[2], w[3:]) for w in lines if w and w[0] == str(attempt)]


def _attempt(forkserver, case, model, out, events, attempt, plan):
    """One training process; ``plan`` = (``"save"``, k, delay): kill ``delay`` s after its k-th save began;
    (``"train"``, k, delay): ``delay`` s after its k-th save ended (k = 0: after training began), i.e. inside the
    generation / update of the next step; ``None``: run to the end. Returns where it was killed (``"save"`` /
    ``"train"``) or ``None`` if it finished."""
    ctx, kill_train = forkserver
    process = ctx.Process(target=kill_train.run, args=(case, model, str(out), str(events)),
                          kwargs=dict(attempt=str(attempt), save_delay=SAVE_DELAY,
                                      log_file=str(out.parent / f"{case}.log")))
    process.start()
    deadline = time.time() + 600
    try:
        if plan is not None:
            kind, k, delay = plan
            while process.is_alive() and time.time() < deadline:
                names = [name for _, name, _ in _events(events, attempt)]
                if (kind == "save" and names.count("SAVE_BEGIN") >= k) or (
                        kind == "train" and "TRAIN_BEGIN" in names and names.count("SAVE_END") >= k):
                    time.sleep(delay)
                    if process.is_alive():
                        os.kill(process.pid, signal.SIGKILL)
                    break
                time.sleep(0.01)
        process.join(max(1.0, deadline - time.time()))
    finally:
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            process.join()
    if process.exitcode == -signal.SIGKILL:
        seen = _events(events, attempt)
        return "save" if seen and seen[-1][1] == "SAVE_BEGIN" else "train"
    assert process.exitcode == 0, (out.parent / f"{case}.log").read_text()[-4000:]
    return None


def _assert_checkpoints_complete(out):
    """Every checkpoint-N folder on disk is complete (checked independently of trl_ext)."""
    for folder in out.glob("checkpoint-*"):
        for name in REQUIRED:
            assert (folder / name).is_file(), (folder, name)
        assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == int(folder.name.split("-")[1])
        load_file(str(folder / "model.safetensors"))
        if (folder / "value_head.safetensors").exists():
            load_file(str(folder / "value_head.safetensors"))


def _final(out):
    tensors = load_file(str(out / "final" / "model.safetensors"))
    head = out / "final" / "value_head.safetensors"
    if head.is_file():
        tensors.update({f"value_head.{k}": v for k, v in load_file(str(head)).items()})
    beta = out / "final" / "rft_state.json"
    return tensors, json.loads(beta.read_text())["beta"] if beta.is_file() else None


def _last_checkpoint(out):
    return max((int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")), default=0)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["rft", "rft_spg2", "process_grpo", "unified"])
def test_sigkill_at_random_moments_then_resume_is_bit_identical(forkserver, tiny_model_path, tmp_path, case):
    kill_train = forkserver[1]
    started = time.time()
    reference, events = tmp_path / "reference", tmp_path / "events.log"
    assert _attempt(forkserver, case, tiny_model_path, reference, events, "ref", None) is None
    ref_events = _events(events, "ref")
    saves = [t for t, name, _ in ref_events if name == "SAVE_BEGIN"]
    step_time = (saves[-1] - saves[0]) / (len(saves) - 1)  # one step and its save, on this machine now
    ends = [t for t, name, _ in ref_events if name == "SAVE_END"]
    train_time = min(b - e for e, b in zip(ends, saves[1:]))  # generation + update of a step, between two saves
    expected, expected_beta = _final(reference)

    rng = random.Random(f"issue-14-{case}")
    out, landed, attempt = tmp_path / "run", [], 0
    while len(landed) < KILLS:
        attempt += 1
        if _last_checkpoint(out) >= kill_train.STEPS - 2 or rng.random() < 0.5:
            # inside the first (or second) save of this process: the staging folder is left, checkpoint-N never
            plan = ("save", 1 if _last_checkpoint(out) >= kill_train.STEPS - 2 else rng.choice([1, 2]),
                    rng.uniform(0.0, SAVE_DELAY + 0.1))
        else:  # inside a step's generation / update, after 0-1 saves of this process
            plan = ("train", rng.choice([0, 1]), rng.uniform(0.0, 0.9 * train_time))
        where = _attempt(forkserver, case, tiny_model_path, out, events, attempt, plan)
        assert where is not None or (out / "final").is_dir(), f"attempt {attempt} ended without a kill or a result"
        if where is None:
            break
        landed.append(where)
        _assert_checkpoints_complete(out)
    assert len(landed) >= KILLS, f"the run finished after only {len(landed)} kills"
    assert _attempt(forkserver, case, tiny_model_path, out, events, attempt + 1, None) is None
    assert json.loads((out / f"checkpoint-{kill_train.STEPS}" / "trainer_state.json").read_text())["epoch"] == 2.0
    assert _staging(out) == []  # the killed saves' staging folders were removed by the restarts

    got, got_beta = _final(out)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert got_beta == expected_beta
    if case.startswith("rft"):
        assert any(k.startswith("value_head.") for k in got) and got_beta is not None and got_beta != 0.1
    print(f"\n{case}: {len(landed)} kills ({landed.count('save')} inside a save), {attempt + 1} processes, "
          f"step+save {step_time:.2f}s (train {train_time:.2f}s), {time.time() - started:.0f}s")
    assert landed.count("save") >= 2 and landed.count("train") >= 2, landed  # both kinds of moment were hit


@pytest.mark.slow
def test_two_process_checkpoints_are_complete_and_named_once(tiny_model_path, tmp_path):
    """2 processes (gloo): both ranks write into the one staging folder of the main process; each checkpoint has
    both ranks' RNG states and rollout buffers, and no staging folder is left."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPTS.parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
           str(SCRIPTS / "kill_train.py"), "rft_spg2", tiny_model_path, str(out), str(tmp_path / "events.log"),
           "--max-steps", "2", "--save-delay", "0.5"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for step in (1, 2):
        folder = out / f"checkpoint-{step}"
        for name in ("rng_state_0.pth", "rng_state_1.pth", "rollout_buffer_0.pt", "rollout_buffer_1.pt",
                     "model.safetensors", "value_head.safetensors", "optimizer.pt", "trainer_state.json"):
            assert (folder / name).is_file(), (folder, name)
    assert _staging(out) == []


@pytest.mark.slow
def test_checkpoint_push_and_rotation_see_only_complete_folders(run_hub_script, hub_server, tiny_model_path, tmp_path):
    """hub_strategy="checkpoint" pushes the published checkpoint-N (value head, trainer_state.json included) as
    last-checkpoint/; no staging folder is uploaded; save_total_limit rotates complete folders only."""
    out = tmp_path / "out"
    run_hub_script("hub_rft_checkpoint_push", hub_server, {"model_path": tiny_model_path, "output_dir": str(out)})
    paths = {path for commit in hub_server.history("user/tiny-rft-ckpt") for path in commit.tree}
    for name in ("model.safetensors", "value_head.safetensors", "rft_state.json", "optimizer.pt",
                 "trainer_state.json"):
        assert f"last-checkpoint/{name}" in paths, sorted(paths)
    assert not [p for p in paths if "_checkpoint" in p or ".tmp-" in p or p.startswith("checkpoint-")], sorted(paths)
    state = json.loads(hub_server.files("user/tiny-rft-ckpt")["last-checkpoint/trainer_state.json"])
    assert state["global_step"] >= 2  # a push still running when the next save comes makes the Trainer skip that one
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-2", "checkpoint-3"]
