"""Self-contained checkpoint folders: plain `save_pretrained` of config, model, VAE and processor writes the code and
the `auto_map`; the folder loads and plans in a fresh process where `occvla_hf` cannot be imported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning
from occvla_hf.remote_code import code_closure
from tests.conftest import make_batch, tiny_config, tiny_model_with_tokenizer, tiny_occupancy_vae

# A finder ahead of every other one: importing occvla_hf (the editable install, the checkout) fails in the process.
BLOCKING_SITECUSTOMIZE = """
import sys

class _BlockOccVLA:
    def find_spec(self, name, path=None, target=None):
        if name == "occvla_hf" or name.startswith("occvla_hf."):
            raise ImportError(f"{name} is blocked: the checkpoint folder's own code must suffice")
        return None

sys.meta_path.insert(0, _BlockOccVLA())
"""

LOAD_AND_PLAN = """
import sys
import numpy as np
import torch
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

try:
    import occvla_hf
except ImportError:
    pass
else:
    sys.exit("occvla_hf was importable")
folder, expected_file = sys.argv[1], sys.argv[2]
expected = torch.load(expected_file, weights_only=True)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
torch.testing.assert_close(model(**expected["batch"]).logits, expected["logits"], rtol=0, atol=1e-6)
rng = np.random.default_rng(0)
images = [[rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(6)]]
inputs = processor(images=images, ego_status=np.zeros((1, 6), np.float32))
plan = model.plan(**inputs, tokenizer=processor.tokenizer, max_new_tokens=3)
torch.testing.assert_close(plan.trajectory, expected["trajectory"], rtol=0, atol=1e-6)
assert plan.meta_action == [expected["meta_action"]], plan.meta_action
vae = AutoModel.from_pretrained(folder + "/vae", trust_remote_code=True).eval()
torch.testing.assert_close(vae.encode(expected["voxels"]), expected["latent"], rtol=0, atol=1e-6)
for obj in (model, processor, vae):
    print(type(obj).__name__, type(obj).__module__)
"""


def camera_images() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(6)]]


def test_saved_model_processor_and_vae_load_and_plan_without_the_package(tmp_path: Path) -> None:
    model, processor = tiny_model_with_tokenizer(tiny_occupancy_vae())
    vae = tiny_occupancy_vae(seed=1)
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    vae.save_pretrained(folder / "vae")

    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_occvla.OccVLAConfig",
        "AutoModel": "modeling_occvla.OccVLAModel",
        "AutoModelForImageTextToText": "modeling_occvla.OccVLAForPlanning",
    }
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_occvla.OccVLAProcessor"
    }
    assert json.loads((folder / "vae" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_occupancy_vae.OccupancyVAEConfig",
        "AutoModel": "occupancy_vae.OccupancyVAE",
    }
    for name in ("modeling_occvla.py", "processing_occvla.py", "constants.py", "reasoning.py", "remote_code.py"):
        assert not re.search(r"^\s*from \.\.", (folder / name).read_text(), re.MULTILINE), name

    batch = make_batch(model.config)
    plan = model.plan(**processor(images=camera_images(), ego_status=np.zeros((1, 6), np.float32)),
                      tokenizer=processor.tokenizer, max_new_tokens=3)  # fmt: skip
    voxels = torch.randint(0, 18, (2, 16, 16, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = {
            "batch": batch,
            "logits": model(**batch).logits,
            "trajectory": plan.trajectory,
            "voxels": voxels,
            "latent": vae.encode(voxels),
            "meta_action": plan.meta_action[0],
        }
    torch.save(expected, tmp_path / "expected.pt")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKING_SITECUSTOMIZE)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PLAN, str(folder), str(tmp_path / "expected.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-1000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["OccVLAForPlanning", "OccVLAProcessor", "OccupancyVAE"]
    assert all(line.split()[1].startswith("transformers_modules.") for line in lines), lines


def test_a_re_saved_remote_folder_is_self_contained_too(tmp_path: Path) -> None:
    """The flat copy closes over itself: its closure is the same set of files, with the same text."""
    config = tiny_config()
    OccVLAForPlanning(config).save_pretrained(tmp_path / "a")
    written = {path.name: path.read_text() for path in (tmp_path / "a").glob("*.py")}
    assert code_closure(tmp_path / "a" / "modeling_occvla.py") == written


def test_code_closure_rejects_imports_a_flat_folder_cannot_express(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "leaf.py").write_text("X = 1\n")
    (package / "sub" / "good.py").write_text("from ..leaf import X\n")
    assert code_closure(package / "sub" / "good.py") == {"good.py": "from .leaf import X\n", "leaf.py": "X = 1\n"}
    (package / "sub" / "bad.py").write_text("from . import good\n")
    with pytest.raises(ValueError, match="relative import"):
        code_closure(package / "sub" / "bad.py")
    (package / "sub" / "leaf.py").write_text("Y = 2\n")
    (package / "sub" / "clash.py").write_text("from .leaf import Y\nfrom ..leaf import X\n")
    with pytest.raises(ValueError, match="share the name leaf.py"):
        code_closure(package / "sub" / "clash.py")


def test_save_pretrained_with_push_to_hub_pushes_the_complete_folder(tmp_path: Path, monkeypatch) -> None:
    pushed = []
    monkeypatch.setattr(OccVLAConfig, "push_to_hub", lambda self, repo_id, **kwargs: pushed.append((repo_id, kwargs)))
    tiny_config().save_pretrained(tmp_path, push_to_hub=True, repo_id="user/occvla", commit_message="first")
    assert pushed == [("user/occvla", {"commit_message": "first"})]
    assert (tmp_path / "configuration_occvla.py").is_file()
