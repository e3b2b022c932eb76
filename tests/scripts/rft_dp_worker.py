"""One RFT run of tests/test_rft.py's 2-process test: ``python rft_dp_worker.py MODEL OUT PER_DEVICE NUM_ITERATIONS``,
alone or under ``torch.distributed.run`` (gloo). Fixed completions of very different lengths per rank, a different
value head on each rank; each rank dumps its batches (targets, values), logs, beta and parameter updates to
``OUT/rank<r>.json``."""

import json
import os
import sys

import torch
from datasets import Dataset
from helpers import char_variety

from trl_ext.models.value_head import ValueHead
from trl_ext.trainers.rft import RFTConfig, RFTTrainer

model_path, out_dir, per_device, num_iterations = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# completion of the k-th row of each global batch of 8: rows 0-3 (rank 0 of 2) are long, rows 4-7 (rank 1) short,
# so the two ranks hold very different numbers of completion tokens; row 1 has no EOS (missing_eos_penalty)
TEXTS = ["The answer is 4 because two plus two makes four.", "3 times 5 equals 15, so the answer is 15",
         "Adding seven and eight: 7 + 8 = 15. Done", "Ten minus four is six.", "4", "Six!", "ok", "It is 9"]


def rollout(prompts, trainer):
    tok = trainer.processing_class
    offset = trainer.accelerator.process_index * len(prompts)
    completion_ids = []
    for i in range(len(prompts)):
        k = (offset + i) % len(TEXTS)
        eos = [] if k == 1 else [tok.eos_token_id]
        completion_ids.append(tok(TEXTS[k], add_special_tokens=False)["input_ids"] + eos)
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert len({len(ids) for ids in prompt_ids}) == 1  # equal prompt lengths: no left padding, same positions
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


rank = int(os.environ.get("RANK", "0"))
torch.manual_seed(1000 + rank)  # a different value head on each rank: DDP must broadcast rank 0's
hidden_size = json.load(open(os.path.join(model_path, "config.json")))["hidden_size"]
head = ValueHead(hidden_size, init="normal")
dataset = Dataset.from_dict({"prompt": [f"What is {a}+{b}?" for a in range(1, 9) for b in (1, 2)]})
args = RFTConfig(
    output_dir=out_dir, per_device_train_batch_size=per_device, max_completion_length=20,
    num_iterations=num_iterations, max_steps=2 * num_iterations,  # two rollouts, each used num_iterations times
    logging_steps=1, optim="sgd", learning_rate=1.0, value_head_learning_rate=0.1, max_grad_norm=0.0,
    lr_scheduler_type="constant",  # plain SGD: the update is proportional to the gradient (Adam's first step is not)
    beta=0.1, kl_target=0.01, kl_horizon=50.0, missing_eos_penalty=0.5, vf_coef=0.5, cliprange_value=0.2,
    gamma=0.95, lam=0.9, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
    disable_tqdm=True,
)
trainer = RFTTrainer(model=model_path, reward_funcs=char_variety, args=args, train_dataset=dataset,
                     rollout_func=rollout, value_head=head)
before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
steps = []
original = trainer._compute_loss


def spy(model, inputs):
    loss = original(model, inputs)
    steps.append({k: inputs[k].detach().tolist() for k in ("advantages", "returns", "old_values", "value_mask")})
    steps[-1]["prompt_ids"] = inputs["prompt_ids"].tolist()
    return loss


trainer._compute_loss = spy
trainer.train()
after = dict(trainer.model.named_parameters())
delta = {n: (after[n].detach() - p) for n, p in before.items()}
dumped = [n for n in after if "value_head" in n or "layers.1.self_attn.q_proj" in n]
with open(os.path.join(out_dir, f"rank{trainer.accelerator.process_index}.json"), "w") as f:
    json.dump({
        "world": trainer.accelerator.num_processes, "steps": steps,
        "logs": [e for e in trainer.state.log_history if "loss" in e],
        "beta": trainer.kl_ctl.value,
        "head_before": {n: p.flatten().tolist() for n, p in before.items() if "value_head" in n},
        "delta_norms": {n: d.norm().item() for n, d in delta.items()},
        "delta": {n: delta[n].flatten().tolist() for n in dumped},
        "after": {n: after[n].detach().flatten().tolist() for n in dumped},
    }, f)
