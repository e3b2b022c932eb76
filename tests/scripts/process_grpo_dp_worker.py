"""One ProcessGRPO run of tests/test_process_grpo.py's 2-process test: ``python process_grpo_dp_worker.py MODEL OUT
PER_DEVICE``, alone or under ``torch.distributed.run`` (gloo). One group of 8 fixed completions split over the ranks;
each rank dumps its advantages, completion mask and first log to ``OUT/rank<r>.json``."""

import json
import os
import sys

from test_process_grpo import _dataset, _fixed_rollout, _kwargs, _spy, answer_is_six

from trl_ext.rewards.process import ArithmeticStepVerifier
from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer

model_path, out_dir, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = ["1+1=2\n\n2+2=5\n\n#### 4", "3+3=6\n\n#### 6", "no claim\n\n#### 6",
         "5*5=25\n\n25-1=24\n\n#### 6",
         "7+1=9", "#### 3", "2*3=6\n\n6+6=12\n\n12/4=3\n\n#### 6", "9-9=1\n\n#### 6"]
trainer = ProcessGRPOTrainer(
    model=model_path, reward_funcs=[answer_is_six], process_reward_funcs=[ArithmeticStepVerifier()],
    args=ProcessGRPOConfig(**_kwargs(out_dir, num_generations=8, per_device_train_batch_size=per_device)),
    train_dataset=_dataset(), rollout_func=_fixed_rollout(texts),
)
captured = _spy(trainer)
trainer.train()
batch = captured[0]
rank = trainer.accelerator.process_index
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump({"world": trainer.accelerator.num_processes, "advantages": batch["advantages"].tolist(),
               "mask": batch["completion_mask"].tolist(), "logs": trainer.state.log_history[0]}, f)
