"""Checkpoints shipped inside the package (no download needed).

`EMBEDDED_MODEL_PATH` is a small OccVLA (6.6 M parameters, random init) trained on procedural sim scenes by the
recipes `configs/embedded_vae.yaml` and `configs/embedded_joint.yaml`; its folder holds the model, the frozen
occupancy VAE, the processor and the model card (README.md) with the occupancy ablation. It is the model of
`occvla-hf demo`: a smoke test of the whole pipeline, not a driving model.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_MODEL_NAME: str = "occvla-sim-small"
EMBEDDED_MODEL_PATH: Path = Path(__file__).resolve().parent / EMBEDDED_MODEL_NAME

__all__ = ["EMBEDDED_MODEL_NAME", "EMBEDDED_MODEL_PATH"]
