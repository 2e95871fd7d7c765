"""Configuration of the occupancy VAE, the 3D scene tokenizer whose latent space supervises OccVLA (stage 1)."""

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ..constants import NUM_OCC_CLASSES, OCC_FREE_CLASS, OCC_GRID_SHAPE
from ..remote_code import RemoteCodeMixin

LATENT_TYPES: tuple[str, ...] = ("vq", "kl")
VQ_UPDATES: tuple[str, ...] = ("ema", "straight_through")


@strict
class OccupancyVAEConfig(RemoteCodeMixin, PreTrainedConfig):
    r"""
    Configuration of [`OccupancyVAE`]: a BEV autoencoder over semantic occupancy grids, in the spirit of the scene
    tokenizers of OccWorld and OccLLaMA. The height axis is folded into channels (`Z * class_embedding_dim`), a 2D
    conv encoder downsamples the BEV plane by `2 ** (len(block_channels) - 1)` to the latent, and a mirrored decoder
    predicts per-voxel class logits. Defaults: Occ3D-nuScenes grid 200 x 200 x 16, 18 classes, latent 128 x 50 x 50.

    Validation runs at construction (and on `config.validate()`); a bad value raises a `ValueError` (wrapped by the
    `@strict` machinery) that names the field.

    Args:
        grid_shape (`tuple[int, int, int]`, defaults to `OCC_GRID_SHAPE` = (200, 200, 16)):
            Voxel grid (X, Y, Z) of the inputs. X and Y must be divisible by the downsampling factor.
        num_classes (`int`, defaults to 18):
            Number of semantic classes including free.
        free_class (`int`, defaults to 17):
            Label id of free space (used by metrics and the geometric IoU, never ignored by the losses).
        class_embedding_dim (`int`, defaults to 16):
            Size of the learnt per-class embedding; the encoder input has `Z * class_embedding_dim` channels.
        block_channels (`tuple[int, ...]`, defaults to (64, 128, 256)):
            Channel width of each resolution stage of the encoder (the decoder mirrors it). Each stage after the
            first halves X and Y, so the latent is (X, Y) / 2 ** (len(block_channels) - 1): 50 x 50 by default.
        num_res_blocks (`int`, defaults to 2):
            Residual blocks per stage, in the encoder and in the decoder.
        norm_num_groups (`int`, defaults to 32):
            Groups of every GroupNorm; must divide every entry of `block_channels`.
        latent_channels (`int`, defaults to 128):
            Channels C of the latent (B, C, H, W) that `encode` returns and `decode` consumes.
        latent_type (`str`, defaults to `"vq"`):
            `"vq"`: vector-quantised latent (codebook); `"kl"`: continuous Gaussian latent with a KL term.
        codebook_size (`int`, defaults to 512):
            Number of codebook vectors (VQ only).
        commitment_beta (`float`, defaults to 0.25):
            Weight of the commitment loss ||z_e - sg(z_q)||^2 (VQ only).
        vq_update (`str`, defaults to `"ema"`):
            Codebook learning rule (VQ only): `"ema"` (exponential moving averages of assigned encoder outputs, no
            codebook gradient) or `"straight_through"` (codebook loss ||sg(z_e) - z_q||^2 with gradients).
        ema_decay (`float`, defaults to 0.99):
            Decay of the EMA codebook statistics and of the code-usage counts, in (0, 1).
        dead_code_threshold (`float`, defaults to 1.0):
            During training a code whose EMA usage (assignments per batch) falls below this value is re-initialised
            to a random encoder output of the current batch. 0 disables restarts.
        kl_weight (`float`, defaults to 1e-3):
            Weight of the KL term (KL only), the KL being summed over latent channels and averaged over positions.
        ce_weight (`float`, defaults to 1.0):
            Weight of the voxel cross-entropy.
        class_weights (`list[float]`, *optional*):
            Cross-entropy weight per class (length `num_classes`); `None` weighs classes equally. The stage-1 recipe
            fills it from class frequencies of the training set (`class_weights_from_counts`).
        lovasz_weight (`float`, defaults to 1.0):
            Weight of the Lovasz-softmax loss (a differentiable surrogate of the mIoU); 0 disables it.
        camera_mask_weighting (`bool`, defaults to `False`):
            When `True` and `mask_camera` is given to `forward`, voxels outside the camera mask get
            `outside_camera_weight` in the cross-entropy and are left out of the Lovasz term.
        outside_camera_weight (`float`, defaults to 0.0):
            Cross-entropy weight of voxels outside the camera mask when `camera_mask_weighting` is on, in [0, 1].
        initializer_range (`float`, defaults to 1.0):
            Standard deviation of the class-embedding initialisation.
    """

    model_type = "occvla_occupancy_vae"

    grid_shape: list[int] | tuple[int, ...] = OCC_GRID_SHAPE
    num_classes: int = NUM_OCC_CLASSES
    free_class: int = OCC_FREE_CLASS
    class_embedding_dim: int = 16
    block_channels: list[int] | tuple[int, ...] = (64, 128, 256)
    num_res_blocks: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 128
    latent_type: str = "vq"
    codebook_size: int = 512
    commitment_beta: float | int = 0.25
    vq_update: str = "ema"
    ema_decay: float = 0.99
    dead_code_threshold: float | int = 1.0
    kl_weight: float | int = 1e-3
    ce_weight: float | int = 1.0
    class_weights: list[float | int] | tuple[float | int, ...] | None = None
    lovasz_weight: float | int = 1.0
    camera_mask_weighting: bool = False
    outside_camera_weight: float | int = 0.0
    initializer_range: float | int = 1.0

    def __post_init__(self, **kwargs):
        # JSON gives lists back; tuples keep configs comparable and hashable-free of aliasing.
        self.grid_shape = tuple(self.grid_shape)
        self.block_channels = tuple(self.block_channels)
        if self.class_weights is not None:
            self.class_weights = [float(weight) for weight in self.class_weights]
        super().__post_init__(**kwargs)

    @classmethod
    def _auto_classes(cls) -> dict[str, type]:
        return {"AutoConfig": OccupancyVAEConfig}

    @property
    def downsample_factor(self) -> int:
        """Ratio between the grid's X/Y size and the latent's H/W."""
        return 2 ** (len(self.block_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the latent returned by `encode`."""
        return (
            self.latent_channels,
            self.grid_shape[0] // self.downsample_factor,
            self.grid_shape[1] // self.downsample_factor,
        )

    def validate_architecture(self) -> None:
        """Part of `@strict` validation: every field in range and mutually consistent."""
        if len(self.grid_shape) != 3 or any(size < 1 for size in self.grid_shape):
            raise ValueError(f"grid_shape: expected three positive sizes (X, Y, Z), got {self.grid_shape}")
        if not self.block_channels or any(width < 1 for width in self.block_channels):
            raise ValueError(f"block_channels: expected a non-empty list of positive widths, got {self.block_channels}")
        factor = self.downsample_factor
        if self.grid_shape[0] % factor or self.grid_shape[1] % factor:
            raise ValueError(
                f"grid_shape: X and Y must be divisible by the downsampling factor {factor} "
                f"(2 ** (len(block_channels) - 1)), got {self.grid_shape}"
            )
        if self.norm_num_groups < 1 or any(width % self.norm_num_groups for width in self.block_channels):
            raise ValueError(
                f"norm_num_groups: must divide every entry of block_channels {self.block_channels}, "
                f"got {self.norm_num_groups}"
            )
        for name in ("num_classes", "class_embedding_dim", "num_res_blocks", "latent_channels", "codebook_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes: expected at least 2 classes, got {self.num_classes}")
        if not 0 <= self.free_class < self.num_classes:
            raise ValueError(f"free_class: expected an id in [0, {self.num_classes}), got {self.free_class}")
        if self.latent_type not in LATENT_TYPES:
            raise ValueError(f"latent_type: expected one of {LATENT_TYPES}, got {self.latent_type!r}")
        if self.vq_update not in VQ_UPDATES:
            raise ValueError(f"vq_update: expected one of {VQ_UPDATES}, got {self.vq_update!r}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a value in (0, 1), got {self.ema_decay}")
        for name in ("commitment_beta", "dead_code_threshold", "kl_weight", "ce_weight", "lovasz_weight"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name}: expected a finite non-negative value, got {getattr(self, name)}")
        if not math.isfinite(self.initializer_range) or self.initializer_range <= 0:
            raise ValueError(f"initializer_range: expected a positive value, got {self.initializer_range}")
        if not 0.0 <= self.outside_camera_weight <= 1.0:
            raise ValueError(f"outside_camera_weight: expected a value in [0, 1], got {self.outside_camera_weight}")
        if self.class_weights is not None:
            if len(self.class_weights) != self.num_classes:
                raise ValueError(
                    f"class_weights: expected {self.num_classes} weights (one per class), got {len(self.class_weights)}"
                )
            weights = self.class_weights
            if not all(math.isfinite(weight) and weight >= 0 for weight in weights) or not any(w > 0 for w in weights):
                raise ValueError(
                    f"class_weights: expected finite non-negative weights, not all zero, got {self.class_weights}"
                )


__all__ = ["OccupancyVAEConfig"]
