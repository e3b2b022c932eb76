"""RFT with hub_strategy="checkpoint", a checkpoint every step and save_total_limit=2, from the tiny base on the
loopback Hub; waits for the last background push (tests/test_reliability_kill.py)."""

from datasets import Dataset
from hub_common import ARGS, finish, publish_base_model

from trl_ext.trainers.rft import RFTConfig, RFTTrainer

publish_base_model("user/tiny-base")
args = RFTConfig(output_dir=ARGS["output_dir"], per_device_train_batch_size=4, num_generations=4,
                 max_completion_length=4, max_steps=3, save_strategy="steps", save_steps=1, save_total_limit=2,
                 push_to_hub=True, hub_model_id="user/tiny-rft-ckpt", hub_strategy="checkpoint", logging_steps=1,
                 report_to="none", use_cpu=True, bf16=False, seed=0, disable_tqdm=True, validate_reward_funcs=False,
                 beta=0.1, kl_target=0.5)
trainer = RFTTrainer(model="user/tiny-base", reward_funcs=lambda completions, **kw: [0.1 * len(c) for c in completions],
                     args=args, train_dataset=Dataset.from_dict({"prompt": ["What is 2+2?", "Compute 3*5."]}))
trainer.train()
trainer._finish_current_push()
finish()
