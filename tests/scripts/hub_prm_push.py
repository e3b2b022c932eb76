"""PRMTrainer trained from the tiny base on the loopback Hub, pushed, downloaded and scoring steps as the local model
did; the card's base model and pipeline tag (tests/test_prm.py)."""

from datasets import Dataset
from hub_common import ARGS, RESULT, finish, publish_base_model
from huggingface_hub import ModelCard, snapshot_download

from trl_ext.rewards import ProcessRewardModel
from trl_ext.trainers.prm import PRMConfig, PRMTrainer

publish_base_model("user/tiny-base")
rows = Dataset.from_dict({"prompt": ["Check 1.", "Check 2."], "completions": [["step 0 is right"], ["a", "b"]],
                          "labels": [[True], [True, False]]})
args = PRMConfig(ARGS["output_dir"], max_steps=2, per_device_train_batch_size=2, report_to="none", use_cpu=True,
                 save_strategy="no", push_to_hub=True, hub_model_id="user/tiny-prm", disable_tqdm=True)
trainer = PRMTrainer("user/tiny-base", args=args, train_dataset=rows)
trainer.train()
steps = [["step 0 is right", "step 1 is wrong"]]
local = ProcessRewardModel(trainer.model, trainer.processing_class)(prompts=["Check 3."], steps=steps)
trainer.push_to_hub()
folder = snapshot_download("user/tiny-prm")
RESULT["remote"] = ProcessRewardModel(folder)(prompts=["Check 3."], steps=steps)
RESULT["local"] = local
card = ModelCard.load("user/tiny-prm")
RESULT["base_model"] = card.data.base_model
RESULT["pipeline_tag"] = card.data.pipeline_tag
finish()
