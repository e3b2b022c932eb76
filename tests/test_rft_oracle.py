"""RFTTrainer against an independent recomputation, in states where every term matters.

Each rollout and each update of a real ``trainer.train()`` (and ``trainer.evaluate()``) is recorded with a snapshot
of the weights it ran with. The test then recomputes, from *plain* forwards (``model.model(...)`` + ``lm_head`` +
the value head's weight by hand: no TRL, no fused head, no hook) of the policy, the reference and the value head,
and from a second implementation of the math written here as plain Python loops (k1 reward, GAE, whitening, clipped
surrogate, clipped value loss, adaptive KL), the loss of every update and the logged ``pg_loss``, ``vf_loss``,
``vf_clipfrac``, ``beta``, ``kl``, ``rlhf_reward`` — over two rollouts, so that at the second one the policy differs
from the reference and the KL penalty is not 0.
"""

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from trl_ext.models.value_head import get_value_head
from trl_ext.trainers.rft import RFTConfig, RFTTrainer

# One-digit sums: every prompt has the same number of tokens, so no prompt is left-padded
PROMPTS = ["What is 1+2?", "What is 3+4?", "What is 5+1?", "What is 2+6?"]


def distinct_token_reward(completions, completion_ids, **kwargs):
    """A deterministic score of the completion tokens, recomputed by the test from the recorded ids."""
    return [len(set(ids)) / 10.0 for ids in completion_ids]


class RecordingRFTTrainer(RFTTrainer):
    """Records each rollout and each loss computation with the weights it ran with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def _snapshot(self):
        lm = self.accelerator.unwrap_model(self.model)
        head = get_value_head(lm)
        head_ids = {id(p) for p in head.parameters()}
        policy = {n: p.detach().clone() for n, p in lm.named_parameters() if id(p) not in head_ids}
        return policy, head.summary.weight.detach().clone(), head.summary.bias.detach().clone()

    def _generate_and_score_completions(self, inputs):
        weights = self._snapshot()
        out = super()._generate_and_score_completions(inputs)
        batch = {k: out[k].clone() for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")}
        self.records.append({"kind": "rollout", "weights": weights, "batch": batch, "training": self.model.training})
        return out

    def _compute_loss(self, model, inputs):
        weights = self._snapshot()
        loss = super()._compute_loss(model, inputs)
        self.records.append(
            {"kind": "update", "weights": weights, "loss": loss.item(), "training": self.model.training,
             "batch": {k: inputs[k].clone() for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")}}
        )
        return loss


def _plain_forward(model, weights, batch):
    """Per-token log-probs, values V(s_t) and the final-norm hidden states of the completion tokens."""
    policy, w, b = weights
    missing, unexpected = model.load_state_dict(policy, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)  # lm_head: tied
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    T = batch["completion_ids"].size(1)
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state[:, -T - 1 : -1].float()
        logits = model.lm_head(hidden).double()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, batch["completion_ids"][..., None])[..., 0]
    values = (hidden.double() @ w.double().T)[..., 0] + b.double()[0]
    return logps.tolist(), values.tolist()


def _lengths(batch):
    return [int(m.sum()) for m in batch["completion_mask"]]


def _rollout_targets(batch, old_logps, ref_logps, old_values, beta, gamma, lam):
    """Second implementation: per-token rewards, GAE, returns, whitened advantages, KL and RLHF-reward metrics."""
    lengths = _lengths(batch)
    ids = [row[:n].tolist() for row, n in zip(batch["completion_ids"], lengths)]
    scores = [len(set(r)) / 10.0 for r in ids]
    advantages, returns, seq_kl = [], [], []
    for i, n in enumerate(lengths):
        k1 = [old_logps[i][t] - ref_logps[i][t] for t in range(n)]
        rewards = [-beta * k for k in k1]
        rewards[n - 1] += scores[i]
        adv, next_value, next_adv = [0.0] * n, 0.0, 0.0
        for t in reversed(range(n)):
            delta = rewards[t] + gamma * next_value - old_values[i][t]
            next_adv = delta + gamma * lam * next_adv
            adv[t], next_value = next_adv, old_values[i][t]
        advantages.append(adv)
        returns.append([adv[t] + old_values[i][t] for t in range(n)])
        seq_kl.append(sum(k1))
    flat = [a for row in advantages for a in row]
    mean = sum(flat) / len(flat)
    var = sum((a - mean) ** 2 for a in flat) / (len(flat) - 1)
    advantages = [[(a - mean) / math.sqrt(var + 1e-8) for a in row] for row in advantages]
    kl = sum(seq_kl) / len(seq_kl)
    rlhf_reward = sum(s - beta * k for s, k in zip(scores, seq_kl)) / len(scores)
    return {"advantages": advantages, "returns": returns, "kl": kl, "rlhf_reward": rlhf_reward, "beta": beta}


def _update_loss(batch, logps, old_logps, values, old_values, targets, eps_low, eps_high, clip, vf_coef):
    """Second implementation: dapo clipped surrogate (one process, one micro-batch: Σ / N tokens) + clipped value
    loss with the clamped prediction."""
    pg_sum = vf_sum = clipped = 0.0
    n_tokens = 0
    for i, n in enumerate(_lengths(batch)):
        for t in range(n):
            a = targets["advantages"][i][t]
            ratio = math.exp(logps[i][t] - old_logps[i][t])
            pg_sum += -min(ratio * a, min(max(ratio, 1 - eps_low), 1 + eps_high) * a)
            v, v_old, r = values[i][t], old_values[i][t], targets["returns"][i][t]
            v_clip = min(max(v, v_old - clip), v_old + clip)
            vf_sum += 0.5 * max((v - r) ** 2, (v_clip - r) ** 2)
            clipped += (v_clip - r) ** 2 > (v - r) ** 2
            n_tokens += 1
    pg_loss, vf_loss = pg_sum / n_tokens, vf_sum / n_tokens
    return {"loss": pg_loss + vf_coef * vf_loss, "pg_loss": pg_loss, "vf_loss": vf_loss,
            "vf_clipfrac": clipped / n_tokens}


CONFIGS = {
    "default": {},
    "two-iterations": {"num_iterations": 2, "gamma": 0.99, "lam": 0.9, "epsilon": 0.1, "epsilon_high": 0.3,
                       "cliprange_value": 0.5},
    "adaptive-kl": {"kl_target": 0.002, "kl_horizon": 20.0},
}


def _train_and_evaluate(tiny_model_path, tmp_path, overrides):
    dataset = Dataset.from_dict({"prompt": PROMPTS * 4})
    options = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
        max_completion_length=8, learning_rate=2e-2, beta=0.5, vf_coef=0.7, cliprange_value=0.05,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0, disable_tqdm=True,
        max_steps=2 * overrides.get("num_iterations", 1),
    )
    options.update(overrides)
    args = RFTConfig(**options)
    trainer = RecordingRFTTrainer(
        model=tiny_model_path, reward_funcs=distinct_token_reward, args=args, train_dataset=dataset,
        eval_dataset=Dataset.from_dict({"prompt": PROMPTS}),
    )
    trainer.train()
    eval_metrics = trainer.evaluate()
    return trainer, args, eval_metrics


def _recompute(trainer, args, tiny_model_path):
    """Expected loss and metrics of every update, in order: (training, expected dict, rollout dict)."""
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    ref_weights = ({n: p.detach().clone() for n, p in reference.named_parameters()}, None, None)
    beta = args.beta
    expected, rollout = [], None
    for record in trainer.records:
        if record["kind"] == "rollout":
            batch = record["batch"]
            assert batch["prompt_mask"].all()  # no left padding: the plain forward needs no position ids
            old_logps, old_values = _plain_forward(plain, record["weights"], batch)
            w0 = torch.zeros_like(record["weights"][1])
            ref_logps, _ = _plain_forward(plain, (ref_weights[0], w0, torch.zeros(1)), batch)
            targets = _rollout_targets(batch, old_logps, ref_logps, old_values, beta, args.gamma, args.lam)
            rollout = {"batch": batch, "old_logps": old_logps, "old_values": old_values, "targets": targets}
            if record["training"] and args.kl_target is not None:  # Ziegler et al.'s controller, after each rollout
                error = min(max(targets["kl"] / args.kl_target - 1.0, -0.2), 0.2)
                beta = beta * (1.0 + error * len(_lengths(batch)) / args.kl_horizon)
            continue
        # TRL shuffles a rollout's rows before splitting it into updates: line the rollout's rows up with these
        batch, rows = record["batch"], rollout["batch"]["completion_ids"].tolist()
        order = [rows.index(row) for row in batch["completion_ids"].tolist()]
        assert sorted(order) == list(range(len(rows)))
        targets = {k: [v[i] for i in order] if isinstance(v, list) else v for k, v in rollout["targets"].items()}
        old_logps, old_values = [rollout["old_logps"][i] for i in order], [rollout["old_values"][i] for i in order]
        logps, values = _plain_forward(plain, record["weights"], batch)
        eps_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
        out = _update_loss(batch, logps, old_logps, values, old_values, targets, args.epsilon, eps_high,
                           args.cliprange_value, args.vf_coef)
        expected.append((record["training"], out, targets, record["loss"]))
    return expected


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_loss_and_metrics_equal_an_independent_recomputation(tiny_model_path, tmp_path, config):
    trainer, args, eval_metrics = _train_and_evaluate(tiny_model_path, tmp_path, CONFIGS[config])
    expected = _recompute(trainer, args, tiny_model_path)
    train = [e for e in expected if e[0]]
    evals = [e for e in expected if not e[0]]
    assert len(train) == args.max_steps and len(evals) == 1

    logs = [entry for entry in trainer.state.log_history if "pg_loss" in entry and "eval_pg_loss" not in entry]
    assert len(logs) == len(train)
    tol = dict(abs=2e-4, rel=1e-4)
    worst = 0.0
    for step, ((_, out, targets, loss), log) in enumerate(zip(train, logs)):
        assert loss == pytest.approx(out["loss"], **tol), (step, "loss")
        for key in ("pg_loss", "vf_loss"):
            assert log[key] == pytest.approx(out[key], **tol), (step, key)
            worst = max(worst, abs(log[key] - out[key]))
        assert log["vf_clipfrac"] == pytest.approx(out["vf_clipfrac"], abs=1e-6), (step, "vf_clipfrac")
        worst = max(worst, abs(loss - out["loss"]))
        if "beta" in log:  # rollout steps
            for key in ("beta", "kl", "rlhf_reward"):
                assert log[key] == pytest.approx(targets[key], **tol), (step, key)
                worst = max(worst, abs(log[key] - targets[key]))
    # The states where each term matters were reached: a KL at the second rollout, clipping in a second epoch
    second_rollout = [log for log in logs if "beta" in log][1]
    assert second_rollout["kl"] > 1e-4 and second_rollout["rlhf_reward"] != pytest.approx(
        second_rollout["reward"], abs=1e-6
    )
    assert logs[0]["beta"] == args.beta
    if args.num_iterations == 2:
        assert 0 < logs[1]["vf_clipfrac"] < 1, logs[1]["vf_clipfrac"]  # value clip active on some tokens, inactive on others
        assert max(log["clip_ratio/region_mean"] for log in logs) > 0  # the policy clip too
    if args.kl_target is not None:
        assert second_rollout["beta"] != args.beta
    # evaluate(): the same recomputation, with the β of the end of training
    _, out, targets, loss = evals[0]
    for key in ("pg_loss", "vf_loss"):
        assert eval_metrics[f"eval_{key}"] == pytest.approx(out[key], **tol), key
    for key in ("beta", "kl", "rlhf_reward"):
        assert eval_metrics[f"eval_{key}"] == pytest.approx(targets[key], **tol), key
    assert eval_metrics["eval_loss"] == pytest.approx(out["loss"], **tol)
    assert eval_metrics["eval_kl"] > 1e-4
    print(f"{config}: max |trainer - recomputation| = {worst:.2e}")
