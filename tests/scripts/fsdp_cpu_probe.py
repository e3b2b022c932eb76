"""Worker of tests/test_sharding.py: what FSDP2 does on CPU, under torch alone and under a trl_ext trainer.

    python -m torch.distributed.run --nproc_per_node 2 fsdp_cpu_probe.py torch OUT
    accelerate launch --config_file fsdp2_cpu.yaml fsdp_cpu_probe.py trainer OUT MODEL
Each process writes OUT/<mode><rank>.json.
"""

import json
import os
import sys

import torch


def torch_side(out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    model(torch.randn(4, 8)).sum().backward()
    weight = model[0].weight
    info = {"param_type": type(weight).__name__, "local_rows": weight.to_local().shape[0]}
    with open(os.path.join(out, f"torch{dist.get_rank()}.json"), "w") as f:
        json.dump(info, f)
    dist.destroy_process_group()


def trainer_side(out: str, model_path: str) -> None:
    from datasets import Dataset

    from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

    data = Dataset.from_dict({"prompt": ["What is 2 + 2?", "Add 5 and 1."] * 2, "chosen": [" 4", " 6"] * 2,
                              "rejected": [" 5", " 7"] * 2})
    args = UnifiedLikelihoodConfig(output_dir=os.path.join(out, "run"), per_device_train_batch_size=1, max_steps=1,
                                   report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = UnifiedLikelihoodTrainer(model_path, args=args, train_dataset=data)
    trainer.train()
    rank = trainer.accelerator.process_index
    info = {"world": trainer.accelerator.num_processes, "distributed_type": trainer.accelerator.distributed_type.name,
            "param_type": type(next(trainer.model.parameters())).__name__, "is_fsdp_enabled": trainer.is_fsdp_enabled}
    with open(os.path.join(out, f"trainer{rank}.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    if sys.argv[1] == "torch":
        torch_side(sys.argv[2])
    else:
        trainer_side(sys.argv[2], sys.argv[3])
