"""A trainer built with a token the Hub refuses: HubPushError when the repo is created, before any training step
(tests/test_hub_push.py)."""

from hub_common import ARGS, RESULT, finish, publish_base_model
from hub_generic_trainer import PushTrainer
from transformers import AutoModelForCausalLM, TrainingArguments

from trl_ext.hub import HubPushError

publish_base_model()
model = AutoModelForCausalLM.from_pretrained(ARGS["base_repo"])
args = TrainingArguments(ARGS["output_dir"], max_steps=1, report_to="none", use_cpu=True, push_to_hub=True,
                         hub_model_id=ARGS["repo_id"], hub_token="hf_bad")
try:
    PushTrainer(model=model, args=args)
except HubPushError as err:
    RESULT["message"] = str(err)
finish()
