"""`default_lora_config`: a plain `get_peft_model` adapts the language model and keeps OccVLA's heads trainable."""

from __future__ import annotations

import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model

from occvla_hf import default_lora_config
from occvla_hf.modeling import OccVLAForPlanning
from tests.conftest import make_batch, tiny_config


def trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_plain_get_peft_model_keeps_the_trajectory_head_trainable() -> None:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config())
    prefix = "base_model.model.trajectory_head.modules_to_save.default."  # peft's trained copy of the head
    head = {prefix + name for name, _ in model.trajectory_head.named_parameters()}
    peft_model = get_peft_model(model, default_lora_config(r=4, lora_alpha=8))
    names = trainable(peft_model)
    assert head and head <= names
    assert any("language_model" in name and "lora_A" in name for name in names)
    assert not any("vision_tower" in name or "multi_modal_projector" in name for name in names)
    assert not any("embed_tokens" in name for name in names)
    # The head learns: one step moves its trained copy.
    batch = make_batch(model.config)
    before = {name: dict(peft_model.named_parameters())[name].detach().clone() for name in head}
    peft_model(**batch).trajectory.square().sum().backward()
    torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1).step()
    after = dict(peft_model.named_parameters())
    assert any(not torch.equal(after[name], value) for name, value in before.items())


def test_a_list_of_targets_without_modules_to_save_freezes_the_head_which_the_default_avoids() -> None:
    """What the default guards against: peft trains only what it adapts or is told to save."""
    model = OccVLAForPlanning(tiny_config())
    plain = get_peft_model(model, LoraConfig(target_modules=["q_proj", "v_proj"], r=4))
    assert not any("trajectory_head" in name for name in trainable(plain))


def test_default_lora_config_targets_the_language_model_and_rejects_a_bare_string() -> None:
    config = default_lora_config(target_modules=["q_proj"], modules_to_save=["trajectory_head"])
    assert config.modules_to_save == ["trajectory_head"]
    assert config.target_modules == r"model\.language_model\..*\.(q_proj)"
    with pytest.raises(ValueError, match="target_modules"):
        default_lora_config(target_modules="q_proj")


def test_lora_without_peft_installed_names_the_package(monkeypatch) -> None:
    """Recipes without LoRA run where peft is absent; asking for LoRA there says what is missing."""
    from occvla_hf.training.joint import JointRecipe

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(ImportError, match="lora: needs the `peft` package"):
        default_lora_config(r=4)
    recipe = {
        "stage": "joint",
        "model": {"config": {}},
        "data": {"path": "unused"},
        "training": {"output_dir": "unused"},
    }
    JointRecipe.from_dict(recipe)  # no LoRA: peft is never imported
    with pytest.raises(ImportError, match="lora: needs the `peft` package"):
        JointRecipe.from_dict({**recipe, "lora": {"r": 4}})
