"""OccVLA: a PaliGemma-style VLM that plans, with implicit 3D occupancy supervision through learnable queries.

Sequence layout per sample: `[image tokens of every view | text tokens | occupancy queries]`. The occupancy queries
exist only while training with occupancy targets (or when asked for); they attend to image tokens and to each other,
and no text token attends to them, so text logits and the trajectory are identical with and without them. With
`occupancy_module="cross_attention"` the queries stay out of the LM sequence and cross-attend to the image tokens'
hidden states in a separate Occupancy Transformer (`occupancy_transformer.py`) instead.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask
from transformers import AutoModel, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.generation.configuration_utils import ALL_STATIC_CACHE_IMPLEMENTATIONS
from transformers.initialization import no_init_weights
from transformers.masking_utils import create_causal_mask, create_masks_for_generate, create_sliding_window_causal_mask
from transformers.modeling_outputs import ModelOutput
from transformers.utils import logging

from ..constants import EGO_STATUS_FEATURES, EGO_VELOCITY_FEATURES
from ..reasoning import split_reasoning
from ..remote_code import RemoteCodeMixin
from .configuration_occupancy_vae import OccupancyVAEConfig
from .configuration_occvla import OccVLAConfig
from .loading import load_pretrained
from .loss import IGNORE_INDEX, LOSS_TERMS, loss_item_counts, loss_weights, weighted_loss
from .occupancy_transformer import OccupancyTransformer, hidden_states_request
from .occupancy_vae import OccupancyVAE

logger = logging.get_logger(__name__)

# `plan`'s default text budget: a meta-action, or a reasoning text (at most `REASONING_MAX_WORDS` words, about 3.5
# tokens each with the package's offline tokenizer, fewer with Gemma's) followed by the meta-action.
PLAN_MAX_NEW_TOKENS: int = 16
PLAN_REASONING_MAX_NEW_TOKENS: int = 400

MaskFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class OccVLAModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, text_length, hidden)`):
            Final hidden states of the image and text tokens (occupancy queries removed).
        occupancy_hidden_state (`torch.FloatTensor` of shape `(batch, num_queries, hidden)`, *optional*):
            Final hidden states of the occupancy queries (from the LM sequence or the Occupancy Transformer), when
            they were run.
        cache (`Cache`, *optional*):
            Key/value cache of the image and text tokens (never holds occupancy queries).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Per-layer hidden states of the whole sequence (occupancy queries included when present).
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Per-layer attention weights (eager attention only).
    """

    last_hidden_state: torch.FloatTensor | None = None
    occupancy_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class OccVLAOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            `lm_loss + trajectory_loss_weight * trajectory_loss + occupancy_loss_weight * (latent + voxel terms)`,
            over the terms whose targets were given (`modeling.loss.weighted_loss`).
        lm_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Next-token cross-entropy on tokens whose label is not -100.
        trajectory_loss (`torch.FloatTensor` of shape `()`, *optional*):
            L1 / smooth-L1 between predicted and target waypoints (metres), over valid waypoints.
        occupancy_latent_loss (`torch.FloatTensor` of shape `()`, *optional*):
            MSE between the predicted latent and `occupancy_vae.encode(occupancy)` (or the cached
            `occupancy_latents`), unweighted.
        occupancy_voxel_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Voxel cross-entropy of `occupancy_vae.decode(predicted latent)`, unweighted (only if its weight > 0).
        logits (`torch.FloatTensor` of shape `(batch, text_length, vocab)`, *optional*):
            LM logits of the image and text tokens; `None` in training mode when `labels` are given (the LM head then
            runs only on supervised positions).
        trajectory (`torch.FloatTensor` of shape `(batch, num_waypoints, 2)`, *optional*):
            Waypoints in metres, ego frame (x forward, y left), read from the `<traj>` token.
        occupancy_latent (`torch.FloatTensor` of shape `(batch, C, H, W)`, *optional*):
            Occupancy latent predicted from the occupancy queries.
        occupancy_logits (`torch.FloatTensor` of shape `(batch, num_classes, X, Y, Z)`, *optional*):
            Voxel logits decoded from `occupancy_latent` by the frozen VAE (when `return_occupancy=True`).
        cache, hidden_states, attentions:
            As in [`OccVLAModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    trajectory_loss: torch.FloatTensor | None = None
    occupancy_latent_loss: torch.FloatTensor | None = None
    occupancy_voxel_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    trajectory: torch.FloatTensor | None = None
    occupancy_latent: torch.FloatTensor | None = None
    occupancy_logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class PlanningOutput(ModelOutput):
    """
    Args:
        trajectory (`torch.FloatTensor` of shape `(batch * num_return_sequences, num_waypoints, 2)`):
            Planned waypoints in metres, ego frame, from the trajectory head (no waypoints decoded as text); row i
            belongs to `sequences[i]`.
        sequences (`torch.LongTensor` of shape `(batch * num_return_sequences, prompt_length + new_tokens)`):
            Prompt followed by the generated meta-action tokens.
        meta_action (`list[str]`, *optional*):
            Decoded meta-action text per sample, when a tokenizer was passed to `plan`.
        reasoning (`list[str]`, *optional*):
            Decoded reasoning text per sample (the lines before the meta-action), with `plan(..., reasoning=True)`.
    """

    trajectory: torch.FloatTensor | None = None
    sequences: torch.LongTensor | None = None
    meta_action: list[str] | None = None
    reasoning: list[str] | None = None


class OccVLAMultiModalProjector(nn.Module):
    """Vision width -> text width: one linear layer (PaliGemma) or linear-GELU-linear (LLaVA)."""

    def __init__(self, config: OccVLAConfig) -> None:
        super().__init__()
        vision_size, text_size = config.vision_config.hidden_size, config.text_config.hidden_size
        if config.projector_type == "linear":
            self.linear = nn.Linear(vision_size, text_size, bias=True)
        else:
            self.linear_1 = nn.Linear(vision_size, text_size, bias=True)
            self.act = nn.GELU()
            self.linear_2 = nn.Linear(text_size, text_size, bias=True)
        self.projector_type = config.projector_type

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        if self.projector_type == "linear":
            return self.linear(image_features)
        return self.linear_2(self.act(self.linear_1(image_features)))


class OccVLATrajectoryHead(nn.Module):
    """MLP from the `<traj>` hidden state (+ normalised ego status and ego history) to waypoints, as cumulative
    per-step offsets.

    Each kinematic input (the ego status, the ego history) also has a linear path to the waypoints, added to the
    MLP's output: `init_constant_velocity` sets one of them to the constant-velocity extrapolation (of the ego
    velocity, or without ego status of the last step of the history) and zeroes the MLP's output and the other path,
    so that a new head starts as that baseline planner and learns what to change. The head computes in its own dtype
    with autocast off: metre-scale waypoints lose centimetres in bf16.
    """

    def __init__(self, config: OccVLAConfig) -> None:
        super().__init__()
        in_size = config.text_config.hidden_size + (config.ego_status_dim if config.use_ego_status else 0)
        in_size += 2 * config.ego_history_steps
        hidden = config.trajectory_head_hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(in_size, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, config.num_waypoints * 2),
        )
        self.ego_status_path = (
            nn.Linear(config.ego_status_dim, config.num_waypoints * 2) if config.use_ego_status else None
        )
        self.ego_history_path = (
            nn.Linear(2 * config.ego_history_steps, config.num_waypoints * 2) if config.ego_history_steps else None
        )
        self.num_waypoints = config.num_waypoints
        self.step_scale_m = config.trajectory_step_scale_m
        self.waypoint_step_s = config.waypoint_step_s

    def forward(
        self, traj_hidden: torch.Tensor, ego_status: torch.Tensor | None, ego_history: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, hidden) [+ (batch, ego_status_dim)] [+ (batch, ego_history_steps, 2)] -> (batch, num_waypoints, 2)
        metres."""
        dtype = self.mlp[0].weight.dtype
        with torch.autocast(traj_hidden.device.type, enabled=False):
            features = traj_hidden.to(dtype)
            if ego_status is not None:
                features = torch.cat([features, ego_status.to(dtype)], -1)
            if ego_history is not None:
                features = torch.cat([features, ego_history.flatten(1).to(dtype)], -1)
            waypoints = (self.mlp(features).view(-1, self.num_waypoints, 2) * self.step_scale_m).cumsum(dim=1)
            if self.ego_status_path is not None and ego_status is not None:
                waypoints = waypoints + self.ego_status_path(ego_status.to(dtype)).view(-1, self.num_waypoints, 2)
            if self.ego_history_path is not None and ego_history is not None:
                history = self.ego_history_path(ego_history.flatten(1).to(dtype))
                waypoints = waypoints + history.view(-1, self.num_waypoints, 2)
        return waypoints

    @torch.no_grad()
    def init_constant_velocity(
        self,
        ego_status_mean: Sequence[float] | None = None,
        ego_status_std: Sequence[float] | None = None,
        ego_history_mean: Sequence[float] | None = None,
        ego_history_std: Sequence[float] | None = None,
    ) -> None:
        """Make the head the constant-velocity planner for inputs normalised with these statistics (the processor's).

        With ego status, its linear path maps the normalised (vx, vy) back to m/s and extrapolates them over the
        waypoint times. Without, the ego history's path does it for the velocity of its last step: the past
        keyframes are one waypoint step apart and the current position is the origin, so the waypoint k steps ahead
        is -k times the last past position. The MLP's output layer and the other path become zero, so training
        starts from that baseline."""
        steps = torch.arange(1, self.num_waypoints + 1, dtype=torch.float64)  # (W,) waypoints ahead
        if self.ego_status_path is not None:  # waypoint k at k * step_s seconds times the velocity
            path, name, mean, std = self.ego_status_path, "ego_status", ego_status_mean, ego_status_std
            features = [EGO_STATUS_FEATURES.index(feature) for feature in EGO_VELOCITY_FEATURES]
            scale = self.waypoint_step_s * steps
        elif self.ego_history_path is not None:  # waypoint k at -k times the last past position, (x, y) last
            path, name, mean, std = self.ego_history_path, "ego_history", ego_history_mean, ego_history_std
            features = [path.in_features - 2, path.in_features - 1]
            scale = -steps
        else:
            raise ValueError(
                "use_ego_status, ego_history_steps: the constant-velocity initialisation needs the ego status or the "
                "ego history (both are off)"
            )
        num_features = path.in_features
        if mean is None or std is None or len(mean) != num_features or len(std) != num_features:
            counts = [None if values is None else len(values) for values in (mean, std)]
            raise ValueError(f"{name}_mean/{name}_std: expected {num_features} values each, got {counts}")
        weight = torch.zeros(self.num_waypoints, 2, num_features, dtype=torch.float64)
        bias = torch.zeros(self.num_waypoints, 2, dtype=torch.float64)
        for axis, feature in enumerate(features):
            weight[:, axis, feature] = scale * float(std[feature])
            bias[:, axis] = scale * float(mean[feature])
        path.weight.copy_(weight.reshape(-1, num_features))
        path.bias.copy_(bias.reshape(-1))
        for other in (self.ego_status_path, self.ego_history_path):
            if other is not None and other is not path:
                other.weight.zero_()
                other.bias.zero_()
        self.mlp[-1].weight.zero_()
        self.mlp[-1].bias.zero_()


class OccVLAOccupancyHead(nn.Module):
    """Maps occupancy-query states laid out on a BEV grid to the VAE latent; each query fills one latent patch."""

    def __init__(self, config: OccVLAConfig) -> None:
        super().__init__()
        channels = config.occupancy_latent_shape[0]
        self.rows, self.cols = config.num_occupancy_queries_hw
        self.patch_h, self.patch_w = config.occupancy_patch_hw
        self.channels = channels
        self.norm = nn.LayerNorm(config.text_config.hidden_size)
        self.fc1 = nn.Linear(config.text_config.hidden_size, config.occupancy_head_hidden_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.occupancy_head_hidden_size, channels * self.patch_h * self.patch_w)

    def forward(self, query_states: torch.Tensor) -> torch.Tensor:
        """(batch, rows * cols, hidden) -> latent (batch, C, rows * patch_h, cols * patch_w)."""
        batch = query_states.shape[0]
        patches = self.fc2(self.act(self.fc1(self.norm(query_states))))
        patches = patches.view(batch, self.rows, self.cols, self.channels, self.patch_h, self.patch_w)
        return patches.permute(0, 3, 1, 4, 2, 5).reshape(
            batch, self.channels, self.rows * self.patch_h, self.cols * self.patch_w
        )


def _grown_rows(weight: torch.Tensor, rows: int, fill: torch.Tensor | float) -> torch.Tensor:
    """`weight` (vocab, hidden) with `rows` rows: itself when it has them, else a copy whose new rows hold `fill`."""
    if weight.shape[0] >= rows:
        return weight
    grown = weight.new_empty((rows, weight.shape[1]))
    grown[: weight.shape[0]] = weight
    grown[weight.shape[0] :] = fill
    return grown


def occupancy_query_mask_functions(is_query: torch.Tensor, is_image: torch.Tensor) -> tuple[MaskFunction, MaskFunction]:
    """Mask overlays for occupancy queries, given `(batch, kv_length)` booleans marking queries and image tokens.

    Returns `(or_fn, and_fn)` for `create_causal_mask`: queries see each other bidirectionally (or); a query row keeps
    only image and query columns, and every other row loses the query columns (and).
    """

    def or_fn(batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        return is_query[batch_idx, q_idx] & is_query[batch_idx, kv_idx]

    def and_fn(batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        query_row, query_col = is_query[batch_idx, q_idx], is_query[batch_idx, kv_idx]
        return (~query_row & ~query_col) | (query_row & (query_col | is_image[batch_idx, kv_idx]))

    return or_fn, and_fn


def mask_cache(cache: Cache | None, config: PreTrainedConfig) -> Cache | None:
    """The cache that a mask of the text `config`'s attention is built from.

    A static cache layer keeps its length in a device tensor, which its update increments in place, and mask creation
    takes that tensor as the query offset. An SDPA or eager mask is materialised at once, but flex attention's
    `BlockMask` evaluates its mask function when attention runs: after the layer's update, so every decoding query
    would sit one slot further on and see the next, empty cache slot. For flex attention this returns a shallow copy
    of `cache` whose query offset is a copy of the length, taken now (one small copy per mask, not per layer; the
    layers, keys and values stay shared).
    """
    if cache is None or config._attn_implementation != "flex_attention":
        return cache

    def query_offset(layer_idx: int = 0) -> int | torch.Tensor:
        offset = cache.get_query_offset(layer_idx)
        return offset.clone() if isinstance(offset, torch.Tensor) else offset

    view = copy.copy(cache)
    view.get_query_offset = query_offset
    return view


DECODING_MASK_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention")  # the attention masks `decoding_masks` builds
FLEX_BLOCK_SIZE = 128  # slots per block of a decoding step's flex-attention `BlockMask` (flex attention's default)


def decoding_masks(
    config: PreTrainedConfig, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, cache: Cache
) -> Any | None:
    """The attention masks of one decoding step (one query per sample) on a static cache, in the layout of
    `create_masks_for_generate` (one mask per layer type when the config has `layer_types`); None for an attention
    implementation outside DECODING_MASK_IMPLEMENTATIONS, and once a sliding-window layer has dropped slots.

    transformers builds each step's masks with its general mask machinery, on the host: 0.9 ms per step for eager
    attention and 8.3 ms for flex attention (a `create_block_mask` over the whole grid) at the PaliGemma-2 shape on an
    H200, against a step of about 5 ms. A decoding query at cache slot p sees the slots up to p that the padding mask
    keeps, nothing else: the prefix and `<traj>` are in the cache, occupancy queries are training-only. A
    sliding-window layer whose cache has not dropped a slot (its mask offset is 0) holds its slots in order too, with
    p within the window of all of them. So each mask is one comparison with p on the device: a boolean (batch, 1, 1,
    slots) mask for SDPA, 0 / the dtype's minimum for eager attention, and for flex attention a `BlockMask` of the
    whole blocks up to p's. `attention_mask` (batch, cached + 1 tokens) covers every slot written so far.
    """
    implementation = config._attn_implementation
    if implementation not in DECODING_MASK_IMPLEMENTATIONS:
        return None
    layer_types = getattr(config, "layer_types", None)
    masks, by_length = {}, {}  # layer types with the same number of slots (a window over the cache) share a mask
    for layer_type in dict.fromkeys(layer_types or ["full_attention"]):
        layer_idx = layer_types.index(layer_type) if layer_types else 0
        kv_length, kv_offset = cache.get_mask_sizes(1, layer_idx)
        if kv_offset != 0:
            return None
        if kv_length not in by_length:
            query = cache.get_query_offset(layer_idx)
            by_length[kv_length] = _decoding_mask(implementation, inputs_embeds, attention_mask, query, kv_length)
        masks[layer_type] = by_length[kv_length]
    return masks if layer_types else masks["full_attention"]


def _decoding_mask(
    implementation: str,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    query: torch.Tensor | int,
    kv_length: int,
) -> Any:
    """One mask of `decoding_masks`: the query at cache slot `query` over `kv_length` slots, for `implementation`."""
    batch, device, dtype = inputs_embeds.shape[0], inputs_embeds.device, inputs_embeds.dtype
    # The slot this step writes (a full layer keeps it in a device tensor, which its update moves: a copy).
    query = torch.as_tensor(query, device=device).clone()
    seen = torch.arange(kv_length, device=device) <= query  # (slots,)
    if attention_mask is not None:
        padding = F.pad(attention_mask.to(device=device, dtype=torch.bool), (0, kv_length - attention_mask.shape[1]))
        seen = seen & padding
    seen = seen.expand(batch, kv_length)  # (batch, slots)
    if implementation == "flex_attention":
        return _decoding_block_mask(query, seen)
    if implementation == "sdpa":
        return seen[:, None, None, :]
    return torch.where(seen[:, None, None, :], torch.zeros((), device=device, dtype=dtype), torch.finfo(dtype).min)


def _decoding_block_mask(query: torch.Tensor, seen: torch.Tensor) -> BlockMask:
    """The flex-attention `BlockMask` of one query per sample at cache slot `query` that sees the slots `seen`
    (batch, slots) marks: the whole blocks up to `query`'s, the mask function checking slot by slot."""
    batch, kv_length = seen.shape
    num_blocks = -(-kv_length // FLEX_BLOCK_SIZE)
    count = (query // FLEX_BLOCK_SIZE + 1).to(torch.int32).expand(batch, 1, 1)  # (batch, heads, query blocks)
    indices = torch.arange(num_blocks, dtype=torch.int32, device=seen.device).expand(batch, 1, 1, num_blocks)

    def mask_mod(batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        return seen[batch_idx, kv_idx]

    return BlockMask.from_kv_blocks(
        count.contiguous(),
        indices.contiguous(),
        BLOCK_SIZE=FLEX_BLOCK_SIZE,
        mask_mod=mask_mod,
        seq_lengths=(1, kv_length),
        compute_q_blocks=False,  # the blocks per query block serve the backward pass only
    )


def is_prefill(cache: Cache | None, pixel_values: torch.Tensor | None) -> bool:
    """Whether a forward call starts its sequences (the prompt: bidirectional prefix, `<traj>`), decided on the host.

    Images come with the prompt only, so a call with `pixel_values` or without cached tokens is a prefill. A static
    (compileable) cache is never asked its length: a full-attention layer keeps it on the device (reading it would
    stall every step and break the graph), and a sliding-window layer as a Python int, which a compiled decoding step
    would guard on, recompile for and mark dynamic (CUDA graphs are then recorded again for each value). So an
    initialised static cache without images means decoding, as in transformers' PaliGemma.
    """
    if cache is None or pixel_values is not None:
        return True
    if cache.is_compileable:
        return not cache.is_initialized
    return cache.get_seq_length() == 0


class OccVLAPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    config: OccVLAConfig
    config_class = OccVLAConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = [
        "OccVLAMultiModalProjector",
        "OccVLATrajectoryHead",
        "OccVLAOccupancyHead",
        "OccupancyTransformer",
    ]
    _keep_in_fp32_modules_strict = ["trajectory_head"]  # waypoints in metres: bf16 would cost centimetres
    _supports_flash_attn = False  # flash attention cannot express the prefix/occupancy-query mask
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    @classmethod
    def _auto_classes(cls) -> dict[str, type]:
        return {"AutoModel": OccVLAModel, "AutoModelForImageTextToText": OccVLAForPlanning}

    def _auto_map_owner(self) -> OccVLAConfig:
        return self.config


class OccVLAModel(OccVLAPreTrainedModel):
    """Vision tower + projector + language model (no LM head), with the occupancy queries (in the LM sequence, or
    in the Occupancy Transformer for `occupancy_module="cross_attention"`)."""

    def __init__(self, config: OccVLAConfig) -> None:
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = OccVLAMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        in_lm = config.occupancy_module == "lm_queries"
        self.occupancy_queries = (
            nn.Embedding(config.num_occupancy_queries, config.text_config.hidden_size)
            if config.occupancy_modules and in_lm
            else None
        )
        self.occupancy_transformer = OccupancyTransformer(config) if config.occupancy_modules and not in_lm else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, num_views, 3, H, W) -> (batch, num_views * image_seq_length, text_hidden)."""
        batch, views = pixel_values.shape[:2]
        vision_dtype = self.vision_tower.dtype
        features = self.vision_tower(pixel_values.flatten(0, 1).to(vision_dtype)).last_hidden_state
        return self.multi_modal_projector(features).reshape(batch, views * features.shape[1], -1)

    def _check_inputs(self, input_ids: torch.Tensor | None, pixel_values: torch.Tensor | None) -> None:
        if input_ids is not None and (input_ids.dim() != 2 or 0 in input_ids.shape):
            raise ValueError(f"input_ids: expected (batch >= 1, sequence >= 1), got {tuple(input_ids.shape)}")
        if pixel_values is None:
            return
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"pixel_values: expected a torch.Tensor (the processor's output with return_tensors='pt'), "
                f"got {type(pixel_values).__module__}.{type(pixel_values).__name__}"
            )
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel_values: expected normalised floating-point values (the processor turns uint8 images into "
                f"them), got {pixel_values.dtype}"
            )
        if not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values: contains NaN or infinite values")
        size = self.config.vision_config.image_size
        expected = (self.config.num_views, 3, size, size)
        if pixel_values.dim() != 5 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values: expected (batch, {', '.join(map(str, expected))}) "
                f"(num_views = {self.config.num_views}, "
                f"image_size = {size}), got {tuple(pixel_values.shape)}"
            )
        if input_ids is not None and input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"pixel_values: batch size {pixel_values.shape[0]} does not match input_ids batch size "
                f"{input_ids.shape[0]}"
            )
        if input_ids is not None:
            expected_tokens = self.config.num_views * self.config.image_seq_length
            counts = (input_ids == self.config.image_token_id).sum(dim=1)
            if (counts != expected_tokens).any():
                raise ValueError(
                    f"input_ids: expected {expected_tokens} image tokens (id {self.config.image_token_id}) per sample "
                    f"for {self.config.num_views} views, got {counts.tolist()}"
                )

    @staticmethod
    def _check_masks(
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        batch: int,
        past_seen: int | torch.Tensor,
        text_length: int,
        prefill: bool,
    ) -> None:
        """A 2D `attention_mask` covers the cached and the new tokens; `token_type_ids` the prompt (prefill).

        The mask is checked against the cache where its length is a host int (no cache, dynamic cache); a static
        cache's length is a device tensor (see `is_prefill`). Prepared masks (4D, or one per layer type) pass."""
        padding_mask = isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2
        if padding_mask and isinstance(past_seen, int):
            expected = (batch, past_seen + text_length)
            if tuple(attention_mask.shape) != expected:
                shape = tuple(attention_mask.shape)
                raise ValueError(f"attention_mask: expected {expected} (batch, cached + new tokens), got {shape}")
        if token_type_ids is not None and prefill and tuple(token_type_ids.shape) != (batch, text_length):
            raise ValueError(
                f"token_type_ids: expected {(batch, text_length)} like input_ids, got {tuple(token_type_ids.shape)}"
            )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        with_occupancy_queries: bool = False,
        **kwargs: Any,
    ) -> OccVLAModelOutput:
        """Runs the LM over `[image tokens | text | occupancy queries (if with_occupancy_queries)]`; with the
        cross-attention occupancy module, over `[image tokens | text]` and then the Occupancy Transformer.

        `pixel_values`: (batch, num_views, 3, H, W); `token_type_ids`: 0 for the bidirectional image+prompt prefix,
        1 for the causal suffix (PaliGemma convention); positions are 1-indexed like PaliGemma's.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids / inputs_embeds: pass exactly one of them")
        self._check_inputs(input_ids, pixel_values)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        batch, text_length = inputs_embeds.shape[:2]

        prefill = is_prefill(cache, pixel_values)
        past_seen = cache.get_seq_length() if cache is not None else 0
        self._check_masks(attention_mask, token_type_ids, batch, past_seen, text_length, prefill)
        if position_ids is None:
            position_ids = (torch.arange(text_length, device=inputs_embeds.device) + past_seen + 1).unsqueeze(0)

        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("input_ids: required with pixel_values to locate the image tokens")
            image_features = self.get_image_features(pixel_values).to(inputs_embeds.device, inputs_embeds.dtype)
            image_mask = (input_ids == self.config.image_token_id).unsqueeze(-1).expand_as(inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features)

        or_fn = and_fn = None
        cross_attention = with_occupancy_queries and self.occupancy_transformer is not None
        lm_queries = with_occupancy_queries and not cross_attention
        if cross_attention:
            if pixel_values is None:
                raise ValueError("pixel_values: required by the cross-attention occupancy module (it reads images)")
            requested = kwargs.get("output_hidden_states", self.language_model.config.output_hidden_states)
            kwargs["output_hidden_states"] = hidden_states_request(requested, self.config.occupancy_source_layer)
        if lm_queries:
            if input_ids is None:
                raise ValueError("input_ids: required with occupancy queries to locate the image tokens")
            if not prefill:
                raise ValueError("cache: occupancy queries are a training-time prefill input, not a decoding one")
            if attention_mask is not None and getattr(attention_mask, "ndim", None) != 2:
                raise ValueError("attention_mask: occupancy queries extend the 2D padding mask (batch, sequence), not "
                                 "a prepared one")  # fmt: skip
            num_queries = self.config.num_occupancy_queries
            queries = self.occupancy_queries.weight.to(inputs_embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
            inputs_embeds = torch.cat([inputs_embeds, queries], dim=1)
            is_image = input_ids == self.config.image_token_id
            is_image = F.pad(is_image, (0, num_queries), value=False)
            is_query = torch.zeros_like(is_image)
            is_query[:, text_length:] = True
            # Queries continue the positions after the last image token: only their distance to images matters.
            position_ids = position_ids.expand(batch, -1)
            image_end = torch.where(is_image[:, :text_length], position_ids, 0).amax(dim=1, keepdim=True)
            query_positions = image_end + 1 + torch.arange(num_queries, device=position_ids.device)
            position_ids = torch.cat([position_ids, query_positions], dim=1)
            if attention_mask is not None:
                attention_mask = F.pad(attention_mask, (0, num_queries), value=1)
            if token_type_ids is not None:
                token_type_ids = F.pad(token_type_ids, (0, num_queries), value=1)
            or_fn, and_fn = occupancy_query_mask_functions(is_query, is_image)
            use_cache = False

        if isinstance(attention_mask, Mapping):
            causal_mask: Any = attention_mask  # one mask per layer type, from `create_masks_for_generate`
        else:
            text_config = self.config.get_text_config()
            mask_kwargs: dict[str, Any] = {
                "config": text_config,
                "inputs_embeds": inputs_embeds,
                "attention_mask": attention_mask,
                "cache": mask_cache(cache, text_config),
                "position_ids": position_ids,
                "or_mask_function": or_fn,
                "and_mask_function": and_fn,
            }
            if token_type_ids is not None and prefill:
                mask_kwargs["block_sequence_ids"] = torch.where(token_type_ids == 0, 0, -1)
            causal_mask = create_causal_mask(**mask_kwargs)
            if getattr(self.config.text_config, "sliding_window", None) is not None:
                causal_mask = {
                    "full_attention": causal_mask,
                    "sliding_attention": create_sliding_window_causal_mask(**mask_kwargs),
                }

        outputs = self.language_model(
            attention_mask=causal_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        occupancy_hidden = hidden[:, text_length:] if lm_queries else None
        hidden_states = outputs.hidden_states
        if cross_attention:
            source = outputs.hidden_states[self.config.occupancy_source_layer]
            occupancy_hidden = self.occupancy_transformer(source, input_ids == self.config.image_token_id)
            hidden_states = hidden_states if requested else None
        return OccVLAModelOutput(
            last_hidden_state=hidden[:, :text_length],
            occupancy_hidden_state=occupancy_hidden,
            cache=outputs.cache if use_cache is not False else None,
            hidden_states=hidden_states,
            attentions=outputs.attentions,
        )


class OccVLAForPlanning(OccVLAPreTrainedModel, GenerationMixin):
    """OccVLA with the LM head (answers, meta-actions), the trajectory head and the occupancy head.

    The occupancy VAE (frozen) is attached with `set_occupancy_vae`; it turns occupancy targets into latents.
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # The Trainer's `num_items_in_batch` counts label tokens only; the loss normalises each of its terms over its own
    # items instead (`loss_item_totals`, which OccVLATrainer passes).
    accepts_loss_kwargs = False

    def __init__(self, config: OccVLAConfig) -> None:
        super().__init__(config)
        self.model = OccVLAModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.trajectory_head = OccVLATrajectoryHead(config)
        self.occupancy_head = OccVLAOccupancyHead(config) if config.occupancy_modules else None
        self.occupancy_vae: nn.Module | None = None
        if config.occupancy_vae_config is not None:
            self._register_frozen_vae(OccupancyVAE(OccupancyVAEConfig(**config.occupancy_vae_config)))
        self.post_init()

    # --- embeddings (needed by resize_token_embeddings and weight tying) ---
    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    # --- occupancy VAE ---
    def _register_frozen_vae(self, vae: nn.Module) -> None:
        vae.requires_grad_(False)
        vae.eval()
        self.occupancy_vae = vae

    def set_occupancy_vae(self, vae: nn.Module) -> None:
        """Attach a pretrained occupancy VAE (`encode(voxels)->latent`, `decode(latent)->logits`) and freeze it.

        A transformers `PreTrainedModel` VAE is recorded in the config, so `save_pretrained` checkpoints carry it.
        """
        for method in ("encode", "decode"):
            if not callable(getattr(vae, method, None)):
                raise TypeError(
                    f"vae: expected a module with `encode` and `decode`, {type(vae).__name__} lacks {method}"
                )
        self._register_frozen_vae(vae)
        vae_config = getattr(vae, "config", None)
        self.config.occupancy_vae_config = vae_config.to_dict() if isinstance(vae_config, PreTrainedConfig) else None

    def train(self, mode: bool = True) -> OccVLAForPlanning:
        super().train(mode)
        if self.occupancy_vae is not None:
            self.occupancy_vae.eval()  # frozen: batch-norm statistics and dropout stay in inference mode
        return self

    # --- forward: features -> heads -> loss (each step a method, like timm's forward_features / forward_head) ---
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        token_type_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        ego_status: torch.FloatTensor | None = None,
        ego_history: torch.FloatTensor | None = None,
        trajectory: torch.FloatTensor | None = None,
        trajectory_mask: torch.BoolTensor | None = None,
        occupancy: torch.Tensor | None = None,
        occupancy_mask: torch.BoolTensor | None = None,
        occupancy_latents: torch.FloatTensor | None = None,
        occupancy_sample_mask: torch.BoolTensor | None = None,
        return_occupancy: bool = False,
        occupancy_loss_weight: float | None = None,
        loss_item_totals: Mapping[str, float] | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> OccVLAOutput:
        """Text logits, trajectory (if a `<traj>` token is present) and, with occupancy targets or
        `return_occupancy=True`, the occupancy latent (and decoded voxel logits) from the occupancy queries.

        Shapes: `pixel_values` (batch, num_views, 3, H, W); `ego_status` (batch, ego_status_dim), normalised;
        `ego_history` (batch, ego_history_steps, 2), normalised past ego positions (with `ego_history_steps` > 0);
        `trajectory` (batch, num_waypoints, 2) metres; `trajectory_mask` (batch, num_waypoints);
        `occupancy` (batch, X, Y, Z) class ids; `occupancy_mask` (batch, X, Y, Z) (camera visibility);
        `occupancy_latents` (batch, C, H, W): the frozen VAE's latents of the targets, precomputed
        (`occvla_hf.training.latent_cache`), used by the latent loss instead of encoding `occupancy`; the voxel loss
        (weight > 0) still needs the `occupancy` grids. `occupancy_sample_mask` (batch,) marks the samples that have
        occupancy targets (the others carry placeholders): both occupancy terms then average over those samples only.

        `loss` is `modeling.loss.weighted_loss` of the terms: `occupancy_loss_weight` replaces the config's (a
        trainer's schedule), `loss_item_totals` (items per term of the larger batch this one is part of, e.g. one
        optimiser step on all processes) normalises each term over that batch instead of this one.
        """
        with_targets = occupancy is not None or occupancy_latents is not None
        with_queries = with_targets or return_occupancy
        if with_queries and self.occupancy_head is None:
            raise ValueError("occupancy: this export has no occupancy modules (made by without_occupancy_modules())")
        voxel_term = self.config.occupancy_voxel_loss_weight > 0
        needs_vae = occupancy is not None and (occupancy_latents is None or voxel_term)
        if needs_vae and self.occupancy_vae is None:
            raise ValueError(
                "occupancy: targets need the occupancy VAE (to encode them, or to decode for the voxel loss); call "
                "set_occupancy_vae() first"
            )
        prefill = is_prefill(cache, pixel_values)  # before the LM fills the cache
        features = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            with_occupancy_queries=with_queries,
            **kwargs,
        )
        hidden = features.last_hidden_state
        logits = self.forward_lm_head(hidden, labels, logits_to_keep)
        predicted_trajectory = self.forward_trajectory_head(input_ids, hidden, ego_status, ego_history, prefill)
        occupancy_latent = None if not with_queries else self.occupancy_head(features.occupancy_hidden_state)

        terms: dict[str, torch.Tensor | None] = dict.fromkeys(LOSS_TERMS)
        if labels is not None:
            terms["lm_loss"] = self._lm_loss(hidden, labels)
        if trajectory is not None:
            terms["trajectory_loss"] = self._trajectory_loss(predicted_trajectory, trajectory, trajectory_mask)
        if with_targets:
            terms.update(
                self._occupancy_losses(
                    occupancy_latent, occupancy, occupancy_mask, occupancy_latents, occupancy_sample_mask
                )
            )
        targets = {"labels": labels, "trajectory": trajectory, "trajectory_mask": trajectory_mask,
                   "occupancy": occupancy, "occupancy_mask": occupancy_mask,
                   "occupancy_latents": occupancy_latents,
                   "occupancy_sample_mask": occupancy_sample_mask}  # fmt: skip
        loss = self._loss(terms, targets, occupancy_loss_weight, loss_item_totals)

        occupancy_logits = None
        if return_occupancy and self.occupancy_vae is not None:
            occupancy_logits = self.occupancy_vae.decode(occupancy_latent)
        return OccVLAOutput(
            loss=loss,
            **terms,
            logits=logits,
            trajectory=predicted_trajectory,
            occupancy_latent=occupancy_latent,
            occupancy_logits=occupancy_logits,
            cache=features.cache,
            hidden_states=features.hidden_states,
            attentions=features.attentions,
        )

    # --- heads ---
    def forward_lm_head(
        self, hidden: torch.Tensor, labels: torch.Tensor | None, logits_to_keep: int | torch.Tensor = 0
    ) -> torch.Tensor | None:
        """LM logits (batch, kept positions, vocab) of the `logits_to_keep` last positions (0: all).

        None in training with labels: over a 257k vocabulary and ~1.6k image tokens the full logits dominate memory,
        and the loss runs the LM head on the supervised positions only (`_lm_loss`).
        """
        if labels is not None and self.training:
            return None
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return self._lm_logits(hidden[:, keep, :])

    def _lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head with Gemma-2's final logit soft-capping when the text config has it."""
        logits = self.lm_head(hidden)
        softcap = getattr(self.config.get_text_config(), "final_logit_softcapping", None)
        return logits if softcap is None else torch.tanh(logits / softcap) * softcap

    def forward_trajectory_head(
        self,
        input_ids: torch.Tensor | None,
        hidden: torch.Tensor,
        ego_status: torch.Tensor | None,
        ego_history: torch.Tensor | None = None,
        prefill: bool = True,
    ) -> torch.Tensor | None:
        """Waypoints (batch, num_waypoints, 2), metres, from the `<traj>` token's hidden state (+ ego status and
        history); None without a `<traj>` token or while decoding (`prefill` False: the token was in the prompt, and
        a decoding step stays free of the host sync that finding it costs)."""
        traj_hidden = None if input_ids is None or not prefill else self._trajectory_hidden(input_ids, hidden)
        if traj_hidden is None:
            return None
        return self._trajectory_from_hidden(traj_hidden, ego_status, ego_history)

    def _trajectory_from_hidden(
        self, traj_hidden: torch.Tensor, ego_status: torch.Tensor | None, ego_history: torch.Tensor | None
    ) -> torch.Tensor:
        """The trajectory head on `<traj>` hidden states (batch, hidden), its other inputs checked."""
        batch = traj_hidden.shape[0]
        return self.trajectory_head(
            traj_hidden, self._check_ego_status(ego_status, batch), self._check_ego_history(ego_history, batch)
        )

    def _trajectory_hidden(self, input_ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor | None:
        """Final hidden state at each sample's `<traj>` token: (batch, hidden), or None if no sample has one."""
        is_traj = input_ids == self.config.traj_token_id
        counts = is_traj.sum(dim=1).tolist()  # one host sync for the count check, none for the gather
        if not any(counts):
            return None
        if any(count != 1 for count in counts):
            raise ValueError(
                f"input_ids: expected exactly one <traj> token (id {self.config.traj_token_id}) per sample, "
                f"got counts {counts}"
            )
        position = is_traj.int().argmax(dim=1)  # (batch,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), position]

    def _check_ego_status(self, ego_status: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if not self.config.use_ego_status:
            return None
        expected = (batch, self.config.ego_status_dim)
        if ego_status is None:
            raise ValueError(f"ego_status: required ({expected}) because config.use_ego_status is True")
        if tuple(ego_status.shape) != expected:
            raise ValueError(f"ego_status: expected {expected}, got {tuple(ego_status.shape)}")
        if not torch.isfinite(ego_status).all():
            raise ValueError("ego_status: contains NaN or infinite values")
        return ego_status

    def _check_ego_history(self, ego_history: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        steps = self.config.ego_history_steps
        if steps == 0:
            return None
        expected = (batch, steps, 2)
        if ego_history is None:
            raise ValueError(f"ego_history: required, {expected}, because config.ego_history_steps is {steps}")
        if tuple(ego_history.shape) != expected:
            raise ValueError(f"ego_history: expected {expected} (batch, ego_history_steps, 2), got "
                             f"{tuple(ego_history.shape)}")  # fmt: skip
        if not torch.isfinite(ego_history).all():
            raise ValueError("ego_history: contains NaN or infinite values")
        return ego_history

    # --- loss terms and their weighted total ---
    def _lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy, mean over the positions whose next label is not -100."""
        if labels.shape != hidden.shape[:2]:
            raise ValueError(f"labels: expected {tuple(hidden.shape[:2])} like input_ids, got {tuple(labels.shape)}")
        next_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]  # label of the token each position predicts
        supervised = next_labels != IGNORE_INDEX
        supervised_logits = self._lm_logits(hidden[supervised]).float()  # (num_supervised, vocab)
        lm_loss = F.cross_entropy(supervised_logits, next_labels[supervised], reduction="sum")
        return lm_loss / supervised.sum().clamp(min=1)

    def _trajectory_loss(
        self, predicted: torch.Tensor | None, target: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """L1 / smooth-L1 (metres), mean over the coordinates of valid waypoints."""
        if predicted is None:
            raise ValueError("trajectory: targets given but input_ids contain no <traj> token")
        expected = tuple(predicted.shape)
        if tuple(target.shape) != expected:
            raise ValueError(f"trajectory: expected {expected} (batch, num_waypoints, 2), got {tuple(target.shape)}")
        valid = torch.ones(expected[:2], dtype=torch.bool, device=target.device) if mask is None else mask.bool()
        if tuple(valid.shape) != expected[:2]:
            raise ValueError(f"trajectory_mask: expected {expected[:2]}, got {tuple(valid.shape)}")
        target = torch.where(valid.unsqueeze(-1), target, predicted.detach()).to(predicted.dtype)
        if not torch.isfinite(target).all():
            raise ValueError("trajectory: contains NaN or infinite values at valid waypoints")
        loss_fn = F.smooth_l1_loss if self.config.trajectory_loss_type == "smooth_l1" else F.l1_loss
        per_coord = loss_fn(predicted, target, reduction="none")
        weights = valid.unsqueeze(-1).expand_as(per_coord).to(per_coord.dtype)
        return (per_coord * weights).sum() / weights.sum().clamp(min=1.0)

    def _occupancy_target_latent(
        self, occupancy: torch.Tensor | None, latent: torch.Tensor, occupancy_latents: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the predicted `latent` regresses to: the cached `occupancy_latents` (batch, C, H, W) when given
        (validated), else the frozen VAE's encoding of the target grids `occupancy` (batch, X, Y, Z)."""
        if occupancy is not None and (occupancy.dim() != 4 or occupancy.shape[0] != latent.shape[0]):
            raise ValueError(
                f"occupancy: expected (batch={latent.shape[0]}, X, Y, Z) class ids, got {tuple(occupancy.shape)}"
            )
        if occupancy_latents is not None:
            if tuple(occupancy_latents.shape) != tuple(latent.shape) or not occupancy_latents.is_floating_point():
                raise ValueError(
                    f"occupancy_latents: expected float {tuple(latent.shape)} (batch, occupancy_latent_shape), got "
                    f"{occupancy_latents.dtype} {tuple(occupancy_latents.shape)}"
                )
            if not torch.isfinite(occupancy_latents).all():
                raise ValueError("occupancy_latents: contains NaN or infinite values")
            return occupancy_latents
        with torch.no_grad():
            target = self.occupancy_vae.encode(occupancy)
        if tuple(target.shape) != tuple(latent.shape):
            raise ValueError(
                f"occupancy_latent_shape: the VAE encodes occupancy to {tuple(target.shape[1:])}, the config says "
                f"{tuple(latent.shape[1:])}"
            )
        return target

    def _occupancy_losses(
        self,
        latent: torch.Tensor,
        occupancy: torch.Tensor | None,
        occupancy_mask: torch.Tensor | None,
        occupancy_latents: torch.Tensor | None = None,
        sample_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """`occupancy_latent_loss` (MSE to the VAE encoding of `occupancy`, or to the cached `occupancy_latents`)
        and `occupancy_voxel_loss` (cross-entropy through the frozen decoder over the voxels in `occupancy_mask`,
        scored on the `occupancy` grids; None when its weight is 0), both over the samples in `sample_mask` (batch,)
        when given."""
        target = self._occupancy_target_latent(occupancy, latent, occupancy_latents)
        if sample_mask is None:
            latent_loss = F.mse_loss(latent, target.to(latent.dtype))
        else:
            if tuple(sample_mask.shape) != (latent.shape[0],):
                raise ValueError(
                    f"occupancy_sample_mask: expected ({latent.shape[0]},) (batch,), got {tuple(sample_mask.shape)}"
                )
            sample_mask = sample_mask.bool()
            per_sample = F.mse_loss(latent, target.to(latent.dtype), reduction="none").flatten(1).mean(dim=1)
            latent_loss = (per_sample * sample_mask).sum() / sample_mask.sum().clamp(min=1)
        if self.config.occupancy_voxel_loss_weight == 0:
            return {"occupancy_latent_loss": latent_loss, "occupancy_voxel_loss": None}
        if occupancy is None:
            raise ValueError(
                "occupancy: the voxel loss (occupancy_voxel_loss_weight > 0) is scored on the grids; pass them next "
                "to occupancy_latents"
            )
        logits = self.occupancy_vae.decode(latent)
        per_voxel = F.cross_entropy(logits.float(), occupancy.long(), reduction="none")
        if occupancy_mask is None and sample_mask is None:
            return {"occupancy_latent_loss": latent_loss, "occupancy_voxel_loss": per_voxel.mean()}
        if occupancy_mask is not None and tuple(occupancy_mask.shape) != tuple(occupancy.shape):
            raise ValueError(
                f"occupancy_mask: expected {tuple(occupancy.shape)} like occupancy, got {tuple(occupancy_mask.shape)}"
            )
        weights = torch.ones_like(per_voxel) if occupancy_mask is None else occupancy_mask.to(per_voxel.dtype)
        if sample_mask is not None:
            weights = weights * sample_mask.to(per_voxel.dtype).view(-1, 1, 1, 1)
        voxel_loss = (per_voxel * weights).sum() / weights.sum().clamp(min=1.0)
        return {"occupancy_latent_loss": latent_loss, "occupancy_voxel_loss": voxel_loss}

    def _loss(
        self,
        terms: Mapping[str, torch.Tensor | None],
        targets: Mapping[str, torch.Tensor | None],
        occupancy_loss_weight: float | None,
        loss_item_totals: Mapping[str, float] | None,
    ) -> torch.Tensor | None:
        """`modeling.loss.weighted_loss` of the terms, normalised over `loss_item_totals` when given (the items of
        `targets`, this batch's labels/trajectory/occupancy grids or latents, are then counted)."""
        item_counts = None if loss_item_totals is None else loss_item_counts(targets)
        weights = loss_weights(self.config, occupancy_loss_weight)
        return weighted_loss(terms, weights, item_counts, loss_item_totals)

    # --- generation ---
    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs: Any) -> dict[str, Any]:
        """Training-only targets never reach generation, so no occupancy query is ever built while decoding. The ego
        status and history feed the trajectory head, which runs in the prefill only: with a cache, the decoding steps
        get neither (as transformers drops the images there), so that they take PaliGemma's inputs."""
        training_only = ("labels", "trajectory", "trajectory_mask", "occupancy", "occupancy_mask", "occupancy_latents",
                         "occupancy_sample_mask")  # fmt: skip
        prefill_only = (
            ("ego_status", "ego_history")
            if not kwargs.get("is_first_iteration") and kwargs.get("use_cache", True)
            else ()
        )
        for key in (*training_only, "return_occupancy", *prefill_only):
            kwargs.pop(key, None)
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        if model_inputs.get("position_ids") is not None:
            model_inputs["position_ids"] = model_inputs["position_ids"] + 1  # 1-indexed, as PaliGemma
        return model_inputs

    def _update_model_kwargs_for_generation(
        self,
        outputs: ModelOutput,
        model_kwargs: dict[str, Any],
        is_encoder_decoder: bool = False,
        num_new_tokens: int = 1,
    ) -> dict[str, Any]:
        token_type_ids = model_kwargs.get("token_type_ids")
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder, num_new_tokens
        )
        if token_type_ids is not None:
            # Generated tokens belong to the causal suffix (type 1).
            new = token_type_ids.new_ones((token_type_ids.shape[0], num_new_tokens))
            model_kwargs["token_type_ids"] = torch.cat([token_type_ids, new], dim=-1)
        return model_kwargs

    @staticmethod
    def create_masks_for_generate(
        config: PreTrainedConfig,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: Cache | None,
        position_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Masks for compiled (static-cache) generation: the bidirectional prefix as in the eager forward; a
        decoding step's masks from the query's slot alone (`decoding_masks`) where they apply."""
        text_config = config.get_text_config()
        decoding = (
            inputs_embeds.shape[1] == 1
            and cache is not None
            and cache.is_compileable
            and not is_prefill(cache, pixel_values=None)
            and (attention_mask is None or attention_mask.ndim == 2)  # a prepared mask goes through as it is
        )
        masks = decoding_masks(text_config, inputs_embeds, attention_mask, cache) if decoding else None
        if masks is not None:
            return masks
        block_ids = None if token_type_ids is None else torch.where(token_type_ids == 0, 0, -1)
        return create_masks_for_generate(
            config=text_config,
            inputs_embeds=inputs_embeds,
            block_sequence_ids=block_ids,
            attention_mask=attention_mask,
            cache=mask_cache(cache, text_config),
            position_ids=position_ids,
        )

    @torch.no_grad()
    def plan(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        ego_status: torch.FloatTensor | None = None,
        ego_history: torch.FloatTensor | None = None,
        tokenizer: Any | None = None,
        max_new_tokens: int | None = None,
        reasoning: bool = False,
        **generate_kwargs: Any,
    ) -> PlanningOutput:
        """The planned trajectory and the generated text (meta-action, or reasoning then meta-action).

        `config.trajectory_position="prompt"`: the prompt must end with `<traj>` (the processor's planning template
        does this), and one `generate` call gives both, the trajectory from the prefill. `"after_text"`: the prompt
        has no `<traj>`; `generate` writes the text, then `<traj>` is fed in place of each sample's eos in one more
        forward step on the generation's cache (no second prefill), and the trajectory reads its hidden state.

        Pass the processor's tokenizer to get `meta_action` strings; otherwise decode `sequences` with
        `processor.post_process_plan`. `reasoning=True` (a model trained with `planning_target="reasoning"`) reads
        the text as the reasoning followed by the meta-action (`reasoning.split_reasoning`) and returns both; it
        needs the tokenizer. Default `max_new_tokens`: PLAN_MAX_NEW_TOKENS, or PLAN_REASONING_MAX_NEW_TOKENS with
        reasoning. Extra keyword arguments go to `generate` (greedy by default). With `num_beams` (prompt layout
        only) / `num_return_sequences`, `trajectory` has one row per returned sequence, lined up with `sequences`
        (batch * num_return_sequences rows, the sequences of sample 0 first); in the prompt layout the trajectory
        depends only on the prompt, so the rows of one sample are equal. Both layouts plan on a static cache
        (`cache_implementation="static"` here or in `generation_config`), compiled by `generate` on accelerators.
        """
        if reasoning and tokenizer is None:
            raise ValueError("tokenizer: required with reasoning=True (the reasoning is decoded text)")
        if max_new_tokens is None:
            max_new_tokens = PLAN_REASONING_MAX_NEW_TOKENS if reasoning else PLAN_MAX_NEW_TOKENS
        generate_kwargs.setdefault("do_sample", False)
        inputs = {"input_ids": input_ids, "pixel_values": pixel_values, "attention_mask": attention_mask,
                  "token_type_ids": token_type_ids, "ego_status": ego_status, "max_new_tokens": max_new_tokens,
                  "suppress_tokens": [self.config.traj_token_id, self.config.image_token_id]}  # fmt: skip
        if ego_history is not None:
            inputs["ego_history"] = ego_history
        if self.config.trajectory_position == "after_text":
            sequences, trajectory = self._plan_after_text(inputs, generate_kwargs)
        else:
            sequences, trajectory = self._plan_from_prompt(inputs, generate_kwargs)
        meta_action = reasoning_texts = None
        if tokenizer is not None:
            texts = tokenizer.batch_decode(sequences[:, input_ids.shape[1] :], skip_special_tokens=True)
            if reasoning:
                reasoning_texts, meta_action = (list(column) for column in zip(*map(split_reasoning, texts)))
            else:
                meta_action = [text.strip() for text in texts]
        return PlanningOutput(
            trajectory=trajectory, sequences=sequences, meta_action=meta_action, reasoning=reasoning_texts
        )

    def _plan_from_prompt(
        self, inputs: dict[str, Any], generate_kwargs: dict[str, Any]
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """(sequences, trajectory) with `<traj>` ending the prompt: the trajectory head runs in the prefill."""
        captured: list[torch.Tensor] = []
        handle = self.trajectory_head.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            sequences = self.generate(**inputs, **generate_kwargs)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(
                f"input_ids: planning prompts must contain the <traj> token (id {self.config.traj_token_id})"
            )
        # The prefill ran on the prompts expanded for beams or samples, each prompt's copies next to each other.
        batch = inputs["input_ids"].shape[0]
        per_sample = captured[0][:: captured[0].shape[0] // batch]
        return sequences, per_sample.repeat_interleave(sequences.shape[0] // batch, dim=0)

    def _plan_after_text(
        self, inputs: dict[str, Any], generate_kwargs: dict[str, Any]
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """(sequences, trajectory) with `<traj>` after the generated text, in one cached step after `generate`.

        The step feeds the generated tokens the cache lacks (the last one) and `<traj>` at each sample's next
        position after its text (the tokens before its first eos); the eos and padding after the text are masked
        out, so `<traj>` sees `[prompt | text]` exactly as in the teacher-forced layout `answer <traj>`.
        """
        input_ids = inputs["input_ids"]
        if (input_ids == self.config.traj_token_id).any():
            raise ValueError(
                f"input_ids: with trajectory_position='after_text' the prompt has no <traj> token (id "
                f"{self.config.traj_token_id}); plan appends it after the generated text"
            )
        if generate_kwargs.get("num_beams", 1) != 1:
            raise ValueError("num_beams: trajectory_position='after_text' plans with greedy or sampled decoding")
        if self._generation_setting(generate_kwargs, "cache_implementation") in ALL_STATIC_CACHE_IMPLEMENTATIONS:
            # `generate` sizes a static cache for its own steps; the <traj> step writes one token more than they do.
            needed = input_ids.shape[1] + inputs["max_new_tokens"] + 1
            ceiling = self._generation_setting(generate_kwargs, "max_cache_len") or 0
            generate_kwargs = {**generate_kwargs, "max_cache_len": max(needed, ceiling)}
        output = self.generate(**inputs, **generate_kwargs, return_dict_in_generate=True, use_cache=True)
        sequences, cache = output.sequences, output.cache
        repeats = sequences.shape[0] // input_ids.shape[0]  # num_return_sequences
        prompt_mask = inputs["attention_mask"]
        prompt_mask = torch.ones_like(input_ids) if prompt_mask is None else prompt_mask
        prompt_mask = prompt_mask.repeat_interleave(repeats, dim=0)
        generated = sequences[:, input_ids.shape[1] :]  # (N, T)
        num_new = generated.shape[1]
        eos = self._generation_setting(generate_kwargs, "eos_token_id")
        eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        ended = torch.isin(generated, torch.tensor(eos_ids, dtype=generated.dtype, device=generated.device))
        text_length = torch.where(ended.any(dim=1), ended.int().argmax(dim=1), num_new)  # (N,)
        steps = torch.arange(num_new, device=sequences.device)
        text_mask = (steps < text_length[:, None]).to(prompt_mask.dtype)  # (N, T)
        fed = cache.get_seq_length() - input_ids.shape[1]  # generated tokens already in the cache
        traj = torch.full_like(generated[:, :1], self.config.traj_token_id)
        step_ids = torch.cat([generated[:, fed:], traj], dim=1)
        prompt_tokens = prompt_mask.sum(dim=1, keepdim=True)  # positions are 1-indexed over the unpadded tokens
        positions = torch.cat([prompt_tokens + steps[fed:] + 1, prompt_tokens + text_length[:, None] + 1], dim=1)
        step_mask = torch.cat([prompt_mask, text_mask, torch.ones_like(traj, dtype=prompt_mask.dtype)], dim=1)
        features = self.model(input_ids=step_ids, attention_mask=step_mask, position_ids=positions, cache=cache)
        ego_status, ego_history = (
            None if inputs.get(name) is None else inputs[name].repeat_interleave(repeats, dim=0)
            for name in ("ego_status", "ego_history")
        )
        return sequences, self._trajectory_from_hidden(features.last_hidden_state[:, -1], ego_status, ego_history)

    def _generation_setting(self, generate_kwargs: Mapping[str, Any], name: str) -> Any:
        """A `generate` setting as `generate` resolves it: the keyword argument, else the `generation_config` passed,
        else the model's."""
        if name in generate_kwargs:
            return generate_kwargs[name]
        return getattr(generate_kwargs.get("generation_config") or self.generation_config, name, None)

    # --- conversion ---
    def without_occupancy_modules(self) -> OccVLAForPlanning:
        """Remove the occupancy queries (or Occupancy Transformer), head and VAE in place, for an inference-only
        export (on request only).

        Text and trajectory outputs are unchanged (invariant: nothing else attends to the queries).
        """
        del self.occupancy_head
        del self.model.occupancy_queries
        del self.model.occupancy_transformer
        self.occupancy_head = None
        self.model.occupancy_queries = None
        self.model.occupancy_transformer = None
        self.occupancy_vae = None
        self.config.occupancy_vae_config = None
        self.config.occupancy_modules = False
        return self

    @classmethod
    def from_vlm(
        cls,
        pretrained_model_name_or_path: str,
        *,
        num_views: int = 6,
        dtype: torch.dtype | str | None = None,
        output_loading_info: bool = False,
        **config_kwargs: Any,
    ) -> OccVLAForPlanning | tuple[OccVLAForPlanning, dict[str, list[str]]]:
        """Initialise from a transformers PaliGemma-family checkpoint (SigLIP + Gemma/Gemma2).

        The vision tower, projector, language model and LM head are copied; the vocabulary grows by the `<traj>`
        token (its embedding starts at the mean embedding, also where its id is an unused row of the base's embedding);
        the occupancy queries and both heads are new. Before any training, text logits equal the base model's on the
        same inputs (but for the `<traj>` column). The trajectory head stays in float32 whatever `dtype` is
        (`_keep_in_fp32_modules_strict`, as `from_pretrained` keeps it). `config_kwargs` override OccVLAConfig
        fields (occupancy and planning settings).

        The model is built without weight initialisation; the base model's tensors move into it (no second copy of
        the weights: only the grown embedding is new), and `_init_weights` then initialises the new parameters only,
        as `from_pretrained` does for missing keys.
        """
        from transformers import PaliGemmaForConditionalGeneration

        base = load_pretrained(PaliGemmaForConditionalGeneration, pretrained_model_name_or_path, dtype=dtype)
        base_config, base_dtype = base.config, base.dtype
        base_state = base.state_dict()  # the base's own tensors (no copy): they move into the new model
        del base
        base_vocab = base_config.text_config.vocab_size
        traj_token_id = config_kwargs.pop("traj_token_id", base_vocab)
        text_config = base_config.text_config.to_dict()
        text_config["vocab_size"] = max(base_vocab, traj_token_id + 1)
        config = OccVLAConfig(
            vision_config=base_config.vision_config.to_dict(),
            text_config=text_config,
            projector_type="linear",
            image_token_id=base_config.image_token_id,
            traj_token_id=traj_token_id,
            pad_token_id=getattr(base_config.text_config, "pad_token_id", 0),
            num_views=num_views,
            tie_word_embeddings=base_config.tie_word_embeddings,
            **config_kwargs,
        )
        vocab = config.text_config.vocab_size
        embed_key = "model.language_model.embed_tokens.weight"
        embeddings = base_state[embed_key]
        mean = embeddings.mean(dim=0)
        head = base_state.pop("lm_head.weight", None)
        if head is not None and not config.tie_word_embeddings:
            base_state["lm_head.weight"] = _grown_rows(head, vocab, 0.0)  # an untied head: new tokens start at 0
        base_state[embed_key] = embeddings = _grown_rows(embeddings, vocab, mean)
        # An id inside the base vocabulary is one of its unused rows (PaliGemma's embedding has 64 more rows than
        # its tokenizer has tokens): `<traj>` starts at the mean there too.
        embeddings[traj_token_id] = mean
        del embeddings, mean, head
        with no_init_weights():
            model = cls(config)  # parameters allocated, not initialised: copied ones are assigned below
        result = model.load_state_dict(base_state, strict=False, assign=True)
        if result.unexpected_keys:
            raise ValueError(
                f"pretrained_model_name_or_path: weights with no place in OccVLA: {result.unexpected_keys[:8]}"
            )
        del base_state
        model.tie_weights()
        new_keys = sorted(key for key in result.missing_keys if key != "lm_head.weight")
        model._initialize_new_parameters(new_keys)
        model.to(base_dtype)
        for name in model._keep_in_fp32_modules_strict:  # as `from_pretrained(dtype=...)` keeps them
            model.get_submodule(name).float()
        logger.info("OccVLA.from_vlm: initialised new parameters %s", new_keys)
        info = {"new_keys": new_keys, "added_tokens": list(range(base_vocab, vocab))}
        return (model, info) if output_loading_info else model

    @torch.no_grad()
    def _initialize_new_parameters(self, new_keys: Sequence[str]) -> None:
        """Runs `_init_weights` over the model for the parameters named in `new_keys` only: every other parameter
        and buffer is marked initialised (`_is_hf_initialized`, transformers' flag for loaded weights), so its
        values stay as they are. The new parameters are filled with NaN first: one that `_init_weights` leaves
        untouched (it would hold uninitialised memory) raises instead."""
        new = set(new_keys)
        for name, tensor in [*self.named_parameters(remove_duplicate=False), *self.named_buffers()]:
            if name in new:
                tensor.fill_(float("nan"))
            else:
                tensor._is_hf_initialized = True
        self.initialize_weights()
        parameters = dict(self.named_parameters(remove_duplicate=False))
        left = [name for name in new_keys if parameters[name].isnan().any()]
        if left:
            raise RuntimeError(f"_init_weights left new parameters uninitialised: {left[:8]}")


__all__ = ["OccVLAForPlanning", "OccVLAModel", "OccVLAPreTrainedModel", "OccVLAOutput", "PlanningOutput"]
