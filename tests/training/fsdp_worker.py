"""Two optimiser steps of a tiny OccVLA on 4 planning samples, in one process or fully sharded (FSDP2) over two.

`python -m torch.distributed.run --standalone --nproc_per_node 2 --module tests.training.fsdp_worker OUT` trains with
the FSDP settings of `configs/accelerate/fsdp.yaml` (2 + 2 samples per step over two CPU processes, gloo) into
OUT/run, then resumes OUT/run/checkpoint-1 into OUT/resumed, and writes the per-step logs of both to OUT/logs.json;
`test_trainer` compares them, and the saved models, with `train(per_device_batch=4)` in one process.

accelerate (1.15) hands its FSDP plugin only to accelerator devices (`AcceleratorState.__init__` in
accelerate/state.py): a CPU run gets DDP. `CPUFullyShardedTrainer` therefore sets the FSDP state as accelerate does
there, after the Accelerator is built; from there on wrapping (`fully_shard` per layer), backward, gradient norm,
state dicts and checkpoints are accelerate's and transformers' own FSDP2 code paths.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from transformers import TrainingArguments

from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.modeling.loss import LOSS_TERMS
from occvla_hf.training.collator import OccVLADataCollator
from occvla_hf.training.trainer import OccVLATrainer
from tests.conftest import tiny_config, tiny_occupancy_vae
from tests.training.conftest import planning_sample
from tests.training.ddp_worker import ANSWER_LENGTHS

REPO_ROOT = Path(__file__).resolve().parents[2]
FSDP_CONFIG = yaml.safe_load((REPO_ROOT / "configs" / "accelerate" / "fsdp.yaml").read_text())["fsdp_config"]
LOGGED = ("step", "loss", "grad_norm", *LOSS_TERMS)


class CPUFullyShardedTrainer(OccVLATrainer):
    """`OccVLATrainer` with accelerate's FSDP state on CPU (see the module docstring)."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        state = self.accelerator.state  # what AcceleratorState.__init__ does for accelerator devices:
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.is_fsdp_enabled = True


def tiny_model(seed: int = 0) -> OccVLAForPlanning:
    """`tiny_config` with a real tiny occupancy VAE (so `from_pretrained` rebuilds it) and every loss term on."""
    torch.manual_seed(seed)
    model = OccVLAForPlanning(tiny_config(occupancy_voxel_loss_weight=0.5))
    model.set_occupancy_vae(tiny_occupancy_vae())
    return model


def train(
    output_dir: Path, per_device_batch: int, fsdp: bool = False, resume_from_checkpoint: Path | None = None
) -> list[dict[str, float]]:
    """Logged `step`, `loss`, `grad_norm` and terms of each of 2 steps of SGD with momentum (lr 1, linear decay, no
    clipping), a checkpoint after each step, the model saved to `output_dir`. A resumed run starts from other
    initial weights, so only the checkpoint (weights, momentum, schedule) can make it continue the same curve."""
    torch.set_num_threads(1)
    model = tiny_model(seed=1 if resume_from_checkpoint else 0)
    samples = [planning_sample(model.config, index, length) for index, length in enumerate(ANSWER_LENGTHS)]
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=per_device_batch,
        train_sampling_strategy="sequential",
        optim="sgd",
        optim_args="momentum=0.9",
        learning_rate=1.0,
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        fsdp=fsdp or None,
        fsdp_config=dict(FSDP_CONFIG) if fsdp else None,
    )
    trainer_class = CPUFullyShardedTrainer if fsdp else OccVLATrainer
    trainer = trainer_class(
        model=model, args=args, train_dataset=samples, data_collator=OccVLADataCollator(pad_token_id=0)
    )
    trainer.train(resume_from_checkpoint=None if resume_from_checkpoint is None else str(resume_from_checkpoint))
    trainer.save_model()
    return [{key: entry[key] for key in LOGGED} for entry in trainer.state.log_history if "loss" in entry]


def main(output: Path) -> None:
    logs: dict[str, Any] = {"run": train(output / "run", per_device_batch=2, fsdp=True)}
    logs["resumed"] = train(
        output / "resumed", per_device_batch=2, fsdp=True, resume_from_checkpoint=output / "run" / "checkpoint-1"
    )
    if int(os.environ.get("RANK", 0)) == 0:
        (output / "logs.json").write_text(json.dumps(logs))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
