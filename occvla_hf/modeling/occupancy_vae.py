"""Occupancy VAE: a BEV autoencoder over Occ3D semantic grids whose latent supervises OccVLA's occupancy queries.

Pipeline: class ids (B, X, Y, Z) -> class embedding (B, X, Y, Z, E) -> height folded into channels (B, Z*E, X, Y)
-> 2D conv encoder -> latent (B, C, X/f, Y/f), vector-quantised or Gaussian -> mirrored 2D conv decoder
-> per-voxel logits (B, num_classes, X, Y, Z). Stage 1 trains it alone (`occvla_hf.training.vae`); OccVLA then
freezes it and regresses `encode(gt)` with its occupancy head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..remote_code import RemoteCodeMixin
from .configuration_occupancy_vae import OccupancyVAEConfig


@dataclass
class OccupancyVAEOutput(ModelOutput):
    """Output of [`OccupancyVAE.forward`]. `loss` is the weighted sum of the terms below; the terms are unweighted.

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `ce_weight * ce_loss + lovasz_weight * lovasz_loss` plus, for VQ,
            `codebook_loss + commitment_beta * commitment_loss`, or, for KL, `kl_weight * kl_loss`.
        ce_loss (`torch.FloatTensor` of shape `()`):
            Voxel cross-entropy, weighted by class (and camera mask when enabled).
        lovasz_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Lovasz-softmax loss over the classes present in the batch; `None` when `lovasz_weight` is 0.
        commitment_loss (`torch.FloatTensor` of shape `()`, *optional*):
            VQ: mean squared distance between encoder outputs and their (detached) codes.
        codebook_loss (`torch.FloatTensor` of shape `()`, *optional*):
            VQ with `vq_update="straight_through"`: mean squared distance pulling codes to (detached) encoder outputs.
        kl_loss (`torch.FloatTensor` of shape `()`, *optional*):
            KL: KL(q(z|x) || N(0, I)) summed over latent channels, averaged over batch and latent positions.
        logits (`torch.FloatTensor` of shape `(batch, num_classes, X, Y, Z)`):
            Per-voxel class logits of the reconstruction.
        latent (`torch.FloatTensor` of shape `(batch, latent_channels, H, W)`):
            The latent `encode` returns: the quantised latent (VQ) or the posterior mean (KL).
        indices (`torch.LongTensor` of shape `(batch, H, W)`, *optional*):
            VQ: codebook index of every latent position.
        perplexity (`torch.FloatTensor` of shape `()`, *optional*):
            VQ: exp(entropy) of the batch's code usage; 1 means a single code is used, `codebook_size` the maximum.
    """

    loss: torch.FloatTensor | None = None
    ce_loss: torch.FloatTensor | None = None
    lovasz_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    perplexity: torch.FloatTensor | None = None


@dataclass
class _QuantizerOutput:
    quantized: torch.Tensor  # (batch, C, H, W), straight-through: forward value = codes, gradient = identity
    indices: torch.Tensor  # (batch, H, W)
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor | None
    perplexity: torch.Tensor


def lovasz_softmax_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax loss (Berman et al., CVPR 2018) averaged over the classes present in `labels`.

    For each class c, voxel errors |[label == c] - p_c| are sorted in decreasing order and weighted by the discrete
    gradient of the Jaccard loss along that order, which makes the sum the tight convex (Lovasz) extension of 1 - IoU_c.

    Args:
        probs: (num_voxels, num_classes) softmax probabilities.
        labels: (num_voxels,) class ids.
    Returns:
        Scalar loss; 0 for an empty input.
    """
    num_classes = probs.shape[1]
    present = torch.bincount(labels, minlength=num_classes) > 0
    if labels.numel() == 0:
        return probs.sum() * 0.0
    # One row per present class, voxels along the last axis: row-wise sorts are ~3x faster than column-wise on CPU.
    foreground = (labels[None, :] == present.nonzero()).to(probs.dtype)  # (K, P)
    errors = (foreground - probs.t()[present]).abs()
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    foreground_sorted = torch.gather(foreground, 1, order)
    total = foreground_sorted.sum(dim=1, keepdim=True)  # (K, 1)
    intersection = total - foreground_sorted.cumsum(dim=1)
    union = total + (1.0 - foreground_sorted).cumsum(dim=1)
    jaccard = 1.0 - intersection / union  # (K, P), nondecreasing along P
    jaccard_gradient = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (errors_sorted * jaccard_gradient).sum(dim=1).mean()


class OccupancyResBlock(nn.Module):
    """GroupNorm-SiLU-Conv3x3 twice, with a 1x1 projection on the skip path when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, norm_num_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(F.silu(self.norm1(hidden)))
        residual = self.conv2(F.silu(self.norm2(residual)))
        return self.skip(hidden) + residual


class OccupancyEncoder(nn.Module):
    """Class ids (B, X, Y, Z) -> pre-latent features (B, latent_channels * (2 if KL else 1), X/f, Y/f)."""

    def __init__(self, config: OccupancyVAEConfig) -> None:
        super().__init__()
        depth = config.grid_shape[2]
        self.class_embedding = nn.Embedding(config.num_classes, config.class_embedding_dim)
        self.conv_in = nn.Conv2d(depth * config.class_embedding_dim, config.block_channels[0], 3, padding=1)
        layers: list[nn.Module] = []
        in_channels = config.block_channels[0]
        for stage, width in enumerate(config.block_channels):
            for _ in range(config.num_res_blocks):
                layers.append(OccupancyResBlock(in_channels, width, config.norm_num_groups))
                in_channels = width
            if stage < len(config.block_channels) - 1:
                layers.append(nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1))
        self.blocks = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(config.norm_num_groups, in_channels)
        out_channels = config.latent_channels * (2 if config.latent_type == "kl" else 1)
        self.conv_out = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        batch, size_x, size_y, _ = voxels.shape
        embedded = self.class_embedding(voxels)  # (B, X, Y, Z, E)
        # (B, Z*E, X, Y), made contiguous: the permuted view is channels-last, on which PyTorch's CPU GroupNorm loses
        # about three digits (1e-3 errors, batch-size dependent) against ~1e-6 on the contiguous layout.
        hidden = embedded.permute(0, 3, 4, 1, 2).reshape(batch, -1, size_x, size_y).contiguous()
        hidden = self.blocks(self.conv_in(hidden))
        return self.conv_out(F.silu(self.norm_out(hidden)))


class OccupancyDecoder(nn.Module):
    """Latent (B, C, X/f, Y/f) -> logits (B, num_classes, X, Y, Z); mirrors the encoder with nearest upsampling."""

    def __init__(self, config: OccupancyVAEConfig) -> None:
        super().__init__()
        self.num_classes = config.num_classes
        self.depth = config.grid_shape[2]
        widths = tuple(reversed(config.block_channels))
        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], kernel_size=3, padding=1)
        layers: list[nn.Module] = []
        in_channels = widths[0]
        for stage, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                layers.append(OccupancyResBlock(in_channels, width, config.norm_num_groups))
                in_channels = width
            if stage < len(widths) - 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                layers.append(nn.Conv2d(width, width, kernel_size=3, padding=1))
        self.blocks = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(config.norm_num_groups, in_channels)
        self.conv_out = nn.Conv2d(in_channels, config.num_classes * self.depth, kernel_size=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(latent)))))  # (B, num_classes*Z, X, Y)
        batch, _, size_x, size_y = hidden.shape
        logits = hidden.reshape(batch, self.num_classes, self.depth, size_x, size_y)
        return logits.permute(0, 1, 3, 4, 2)  # (B, num_classes, X, Y, Z)


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sums `tensor` over data-parallel ranks (in place) when torch.distributed runs, else returns it as is."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def _broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    """Makes every rank use rank 0's random choice (dead-code restarts)."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=0)
    return tensor


class OccupancyVectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser with EMA or straight-through codebook learning and dead-code restarts.

    Buffers: `usage` (K,) is the EMA of assignments per batch, used for restarts in both modes; with `vq_update="ema"`
    the codebook has no gradient and `ema_sum` (K, C) holds the EMA of the encoder outputs assigned to each code
    (codebook = ema_sum / smoothed usage). In training, statistics are summed over data-parallel ranks (and restarts
    use rank 0's draws) so replicas stay identical; the perplexity is then global, in eval it is the local batch's.
    Distances and updates run in float32 whatever the model dtype.
    """

    def __init__(self, config: OccupancyVAEConfig) -> None:
        super().__init__()
        self.codebook_size = config.codebook_size
        self.use_ema = config.vq_update == "ema"
        self.ema_decay = config.ema_decay
        self.dead_code_threshold = config.dead_code_threshold
        self.codebook = nn.Parameter(torch.empty(config.codebook_size, config.latent_channels))
        self.register_buffer("usage", torch.ones(config.codebook_size))
        if self.use_ema:
            self.codebook.requires_grad_(False)
            self.register_buffer("ema_sum", torch.empty(config.codebook_size, config.latent_channels))

    def reset_parameters(self) -> None:
        """Uniform codes in +-1/K (VQ-VAE's choice); the EMA statistics start consistent with them."""
        bound = 1.0 / self.codebook_size
        init.uniform_(self.codebook, -bound, bound)
        init.ones_(self.usage)
        if self.use_ema:
            init.copy_(self.ema_sum, self.codebook)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, C) float32 vectors -> (N,) index of the closest code in squared Euclidean distance."""
        codebook = self.codebook.float()
        distances = (
            flat.pow(2).sum(dim=1, keepdim=True) - 2.0 * flat @ codebook.t() + codebook.pow(2).sum(dim=1)[None, :]
        )
        return distances.argmin(dim=1)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, H, W) code indices -> (B, C, H, W) codes."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    def forward(self, latent: torch.Tensor) -> _QuantizerOutput:
        with torch.autocast(device_type=latent.device.type, enabled=False):
            return self._quantize(latent)

    def _quantize(self, latent: torch.Tensor) -> _QuantizerOutput:
        batch, channels, height, width = latent.shape
        flat = latent.float().permute(0, 2, 3, 1).reshape(-1, channels)  # (B*H*W, C)
        indices = self.nearest(flat)
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        if self.training:
            counts = _all_reduce_sum(counts)  # every replica applies the same update
            self._update_codebook(flat, indices, counts)
        probabilities = counts / counts.sum()
        perplexity = torch.exp(-(probabilities * torch.log(probabilities.clamp_min(1e-10))).sum())
        codes = F.embedding(indices, self.codebook.float())  # (B*H*W, C), read after any EMA update
        commitment_loss = F.mse_loss(flat, codes.detach())
        codebook_loss = None if self.use_ema else F.mse_loss(codes, flat.detach())
        quantized = flat + (codes - flat).detach()  # straight-through estimator
        quantized = quantized.reshape(batch, height, width, channels).permute(0, 3, 1, 2).to(latent.dtype)
        return _QuantizerOutput(
            quantized=quantized,
            indices=indices.reshape(batch, height, width),
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
            perplexity=perplexity,
        )

    @torch.no_grad()
    def _update_codebook(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        """EMA statistics (and, in EMA mode, the codebook) from this batch, then restart codes that went unused."""
        self.usage.mul_(self.ema_decay).add_(counts, alpha=1.0 - self.ema_decay)
        if self.use_ema:
            assigned_sum = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat)
            self.ema_sum.mul_(self.ema_decay).add_(_all_reduce_sum(assigned_sum), alpha=1.0 - self.ema_decay)
            total = self.usage.sum()
            smoothed_usage = (self.usage + 1e-5) / (total + self.codebook_size * 1e-5) * total  # Laplace smoothing
            self.codebook.copy_(self.ema_sum / smoothed_usage[:, None])
        dead = self.usage < self.dead_code_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        replacement_rows = torch.randint(flat.shape[0], (num_dead,), device=flat.device)
        replacements = _broadcast_from_rank0(flat[replacement_rows].contiguous())
        self.codebook[dead] = replacements.to(self.codebook.dtype)
        self.usage[dead] = 1.0
        if self.use_ema:
            self.ema_sum[dead] = replacements


class OccupancyVAEPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    config: OccupancyVAEConfig
    config_class = OccupancyVAEConfig
    base_model_prefix = "occupancy_vae"
    main_input_name = "voxels"
    supports_gradient_checkpointing = False
    _no_split_modules = ("OccupancyEncoder", "OccupancyDecoder", "OccupancyVectorQuantizer")

    @classmethod
    def _auto_classes(cls) -> dict[str, type]:
        return {"AutoModel": OccupancyVAE}

    def _auto_map_owner(self) -> OccupancyVAEConfig:
        return self.config

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default conv init (fan-in scaled), unit-variance class embedding, VQ-VAE codebook."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, OccupancyVectorQuantizer):
            module.reset_parameters()


class OccupancyVAE(OccupancyVAEPreTrainedModel):
    """Occupancy autoencoder with a vector-quantised (`latent_type="vq"`) or Gaussian (`"kl"`) BEV latent.

    `encode(voxels) -> latent (B, C, H, W)` is the regression target of OccVLA's occupancy head: the *quantised*
    latent for VQ (post-quantisation, i.e. exactly the decoder's training input, so `decode(encode(x))` is the
    model's reconstruction and a prediction can be snapped to the codebook with `quantize`), the posterior mean for
    KL. `decode(latent) -> logits (B, num_classes, X, Y, Z)`. Freeze it with `requires_grad_(False).eval()`: in
    eval mode the codebook statistics never change and the KL latent is not sampled.
    """

    def __init__(self, config: OccupancyVAEConfig) -> None:
        super().__init__(config)
        self.encoder = OccupancyEncoder(config)
        self.quantizer = OccupancyVectorQuantizer(config) if config.latent_type == "vq" else None
        self.decoder = OccupancyDecoder(config)
        self.post_init()

    def _check_voxels(self, voxels: torch.Tensor) -> torch.Tensor:
        """Validates (batch, X, Y, Z) integer class ids and returns them as int64."""
        expected = tuple(self.config.grid_shape)
        if (
            not isinstance(voxels, torch.Tensor)
            or voxels.dim() != 4
            or tuple(voxels.shape[1:]) != expected
            or voxels.dtype.is_floating_point
            or voxels.dtype == torch.bool
        ):
            got = f"{tuple(voxels.shape)} {voxels.dtype}" if isinstance(voxels, torch.Tensor) else type(voxels)
            raise ValueError(
                f"voxels: expected an integer tensor of shape (batch, {', '.join(map(str, expected))}), got {got}"
            )
        voxels = voxels.long()
        if voxels.numel() and (int(voxels.min()) < 0 or int(voxels.max()) >= self.config.num_classes):
            raise ValueError(
                f"voxels: class ids must lie in [0, {self.config.num_classes}), "
                f"got range [{int(voxels.min())}, {int(voxels.max())}]"
            )
        return voxels

    def _check_latent(self, latent: torch.Tensor) -> None:
        channels, height, width = self.config.latent_shape
        if (
            not isinstance(latent, torch.Tensor)
            or latent.dim() != 4
            or tuple(latent.shape[1:]) != (channels, height, width)
        ):
            got = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent)
            raise ValueError(f"latent: expected (batch, {channels}, {height}, {width}), got {got}")

    def _require_vq(self, method: str) -> OccupancyVectorQuantizer:
        if self.quantizer is None:
            raise ValueError(
                f"{method}: only available with latent_type='vq', this model has {self.config.latent_type!r}"
            )
        return self.quantizer

    def encode(self, voxels: torch.Tensor) -> torch.Tensor:
        """(batch, X, Y, Z) uint8/int64 class ids -> latent (batch, C, H, W): quantised codes (VQ) or mean (KL)."""
        features = self.encoder(self._check_voxels(voxels))
        if self.quantizer is None:
            return features.chunk(2, dim=1)[0]
        return self.quantize(features)[0]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (batch, C, H, W) -> per-voxel class logits (batch, num_classes, X, Y, Z)."""
        self._check_latent(latent)
        return self.decoder(latent)

    def quantize(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VQ only: snaps any latent (batch, C, H, W) to its nearest codes.

        Returns (codes (batch, C, H, W), indices (batch, H, W)).
        """
        quantizer = self._require_vq("quantize")
        self._check_latent(latent)
        channels = latent.shape[1]
        flat = latent.float().permute(0, 2, 3, 1).reshape(-1, channels)
        with torch.autocast(device_type=latent.device.type, enabled=False):
            indices = quantizer.nearest(flat).reshape(latent.shape[0], *latent.shape[2:])
        return quantizer.embed(indices).to(latent.dtype), indices

    def encode_indices(self, voxels: torch.Tensor) -> torch.Tensor:
        """VQ only: (batch, X, Y, Z) class ids -> codebook indices (batch, H, W) (the discrete scene tokens)."""
        self._require_vq("encode_indices")
        return self.quantize(self.encoder(self._check_voxels(voxels)))[1]

    def latent_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """VQ only: codebook indices (batch, H, W) -> latent (batch, C, H, W), equal to `encode` of the same scene."""
        quantizer = self._require_vq("latent_from_indices")
        _, height, width = self.config.latent_shape
        if indices.dim() != 3 or tuple(indices.shape[1:]) != (height, width) or indices.dtype.is_floating_point:
            raise ValueError(
                f"indices: expected an integer tensor (batch, {height}, {width}), "
                f"got {tuple(indices.shape)} {indices.dtype}"
            )
        return quantizer.embed(indices.long())

    def reconstruction_loss(
        self, logits: torch.Tensor, voxels: torch.Tensor, mask_camera: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Voxel losses of `logits` (batch, num_classes, X, Y, Z) against class ids `voxels` (batch, X, Y, Z).

        Returns (cross-entropy, Lovasz-softmax or `None` when `lovasz_weight` is 0), both unweighted scalars. Also
        usable on `decode(predicted_latent)` for a decoded-voxel loss through a frozen decoder.
        """
        config = self.config
        targets = self._check_voxels(voxels)
        if logits.shape != (targets.shape[0], config.num_classes, *targets.shape[1:]):
            raise ValueError(
                f"logits: expected ({targets.shape[0]}, {config.num_classes}, "
                f"{', '.join(map(str, targets.shape[1:]))}), "
                f"got {tuple(logits.shape)}"
            )
        logits = logits.float()
        class_weights = (
            None if config.class_weights is None else torch.tensor(config.class_weights, device=logits.device)
        )
        voxel_ce = F.cross_entropy(logits, targets, weight=class_weights, reduction="none")  # (B, X, Y, Z)
        normaliser = torch.ones_like(voxel_ce) if class_weights is None else class_weights[targets]
        inside = None
        if config.camera_mask_weighting and mask_camera is not None:
            if mask_camera.shape != voxels.shape or mask_camera.dtype != torch.bool:
                raise ValueError(
                    f"mask_camera: expected a bool tensor of shape {tuple(voxels.shape)}, "
                    f"got {tuple(mask_camera.shape)} {mask_camera.dtype}"
                )
            inside = mask_camera
            voxel_weight = torch.where(inside, 1.0, float(config.outside_camera_weight))
            voxel_ce = voxel_ce * voxel_weight
            normaliser = normaliser * voxel_weight
        ce_loss = voxel_ce.sum() / normaliser.sum().clamp_min(1e-12)
        if config.lovasz_weight == 0:
            return ce_loss, None
        probs = logits.softmax(dim=1).permute(0, 2, 3, 4, 1).reshape(-1, config.num_classes)  # (B*X*Y*Z, classes)
        labels = targets.reshape(-1)
        if inside is not None:
            keep = inside.reshape(-1)
            probs, labels = probs[keep], labels[keep]
        return ce_loss, lovasz_softmax_loss(probs, labels)

    def forward(self, voxels: torch.Tensor, mask_camera: torch.Tensor | None = None) -> OccupancyVAEOutput:
        """Encodes, decodes and scores the reconstruction of `voxels` (batch, X, Y, Z).

        `mask_camera` (batch, X, Y, Z) bool is used only with `config.camera_mask_weighting`. In training mode the KL
        latent is sampled and the VQ codebook statistics are updated; in eval mode neither happens.
        """
        config = self.config
        targets = self._check_voxels(voxels)
        features = self.encoder(targets)
        commitment_loss = codebook_loss = kl_loss = indices = perplexity = None
        if self.quantizer is not None:
            quantized = self.quantizer(features)
            latent = decoder_input = quantized.quantized
            indices, perplexity = quantized.indices, quantized.perplexity
            commitment_loss, codebook_loss = quantized.commitment_loss, quantized.codebook_loss
        else:
            mean, log_variance = features.float().chunk(2, dim=1)
            log_variance = log_variance.clamp(-30.0, 20.0)
            kl_loss = 0.5 * (mean.pow(2) + log_variance.exp() - 1.0 - log_variance).sum(dim=1).mean()
            latent = mean.to(features.dtype)
            decoder_input = latent
            if self.training:
                decoder_input = (mean + torch.randn_like(mean) * (0.5 * log_variance).exp()).to(features.dtype)
        logits = self.decoder(decoder_input)
        ce_loss, lovasz_loss = self.reconstruction_loss(logits, targets, mask_camera)
        loss = config.ce_weight * ce_loss
        if lovasz_loss is not None:
            loss = loss + config.lovasz_weight * lovasz_loss
        if commitment_loss is not None:
            loss = loss + config.commitment_beta * commitment_loss
        if codebook_loss is not None:
            loss = loss + codebook_loss
        if kl_loss is not None:
            loss = loss + config.kl_weight * kl_loss
        return OccupancyVAEOutput(
            loss=loss,
            ce_loss=ce_loss,
            lovasz_loss=lovasz_loss,
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
            kl_loss=kl_loss,
            logits=logits,
            latent=latent,
            indices=indices,
            perplexity=perplexity,
        )


__all__ = ["OccupancyVAE", "OccupancyVAEOutput", "OccupancyVAEPreTrainedModel", "lovasz_softmax_loss"]
