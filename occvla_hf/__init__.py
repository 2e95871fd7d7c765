"""occvla-hf: OccVLA, a vision-language-action model with implicit 3D occupancy supervision, for transformers."""

__version__ = "0.1.0"
