"""One optimiser step of a tiny OccVLA on 4 planning samples: one batch, accumulated micro-batches or data-parallel.

`python -m torch.distributed.run --standalone --nproc_per_node 2 --module tests.training.ddp_worker OUT` splits the
samples 2 + 2 over two CPU processes (gloo) and writes, from rank 0, the parameter update and the logged terms to
OUT (safetensors); `test_trainer` compares them with `one_step(per_device_batch=4)` in one process.
"""

from __future__ import annotations

import json
import sys
import tempfile

import torch
from safetensors.torch import save_file
from transformers import TrainingArguments

from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.modeling.loss import LOSS_TERMS
from occvla_hf.training.collator import OccVLADataCollator
from occvla_hf.training.trainer import OccVLATrainer
from tests.conftest import StandInOccupancyVAE, tiny_config
from tests.training.conftest import planning_sample

ANSWER_LENGTHS = (1, 2, 3, 6)  # the two processes see different numbers of answer tokens and valid waypoints


def one_step(
    per_device_batch: int, gradient_accumulation_steps: int = 1
) -> tuple[dict[str, torch.Tensor], dict[str, float], bool]:
    """(parameter updates, first training log, whether this is the main process) after one SGD step (lr 1, no
    clipping, so the update is minus the gradient)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config(occupancy_voxel_loss_weight=0.5))
    model.set_occupancy_vae(StandInOccupancyVAE())
    samples = [
        planning_sample(model.config, index, answer_length) for index, answer_length in enumerate(ANSWER_LENGTHS)
    ]
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=1,
            per_device_train_batch_size=per_device_batch,
            gradient_accumulation_steps=gradient_accumulation_steps,
            train_sampling_strategy="sequential",
            optim="sgd",
            learning_rate=1.0,
            max_grad_norm=0.0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = OccVLATrainer(
            model=model, args=args, train_dataset=samples, data_collator=OccVLADataCollator(pad_token_id=0)
        )
        trainer.train()
    updates = {name: (p.detach() - before[name]).contiguous() for name, p in model.named_parameters() if name in before}
    log = {key: trainer.state.log_history[0][key] for key in ("loss", *LOSS_TERMS)}
    return updates, log, trainer.is_world_process_zero()


if __name__ == "__main__":
    updates, log, is_main = one_step(per_device_batch=2)
    if is_main:
        save_file(updates, sys.argv[1], metadata={"log": json.dumps(log)})
