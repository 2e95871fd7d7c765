"""OccVLA configuration: a PaliGemma-style VLM plus occupancy queries, an occupancy head and a trajectory head."""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..constants import EGO_STATUS_FEATURES, NUM_OCC_CLASSES, NUM_PAST_WAYPOINTS, NUM_WAYPOINTS, WAYPOINT_STEP_S
from ..remote_code import RemoteCodeMixin
from .configuration_occupancy_vae import OccupancyVAEConfig

# Where the planning `<traj>` token sits (`constants.TRAJECTORY_POSITIONS`).
TrajectoryPosition = Literal["prompt", "after_text"]
# Where the occupancy queries run: inside the LM sequence, or in a separate transformer reading the image states.
OccupancyModule = Literal["lm_queries", "cross_attention"]


@strict
class OccVLAConfig(RemoteCodeMixin, PreTrainedConfig):
    r"""
    Configuration of [`OccVLAForPlanning`].

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Vision tower config (SigLIP family); defaults to PaliGemma-3B's SigLIP-So400m/14 at 224 px.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Causal LM config (Gemma family or any decoder-only LM); defaults to PaliGemma-3B's Gemma-2B.
        projector_type (`str`, *optional*, defaults to `"linear"`):
            `"linear"` (PaliGemma: one linear layer) or `"mlp"` (LLaVA: linear-GELU-linear) from vision to text width.
        image_token_id (`int`, *optional*, defaults to 256000):
            Placeholder token replaced by image features; `num_views * image_seq_length` of them per sample.
        traj_token_id (`int`, *optional*, defaults to 257152):
            The `<traj>` token whose final hidden state the trajectory head reads.
        pad_token_id (`int`, *optional*, defaults to 0):
            Padding token id.
        num_views (`int`, *optional*, defaults to 6):
            Camera views per sample, in nuScenes camera order (1 = front camera only).
        num_occupancy_queries_hw (`tuple[int, int]`, *optional*, defaults to `(10, 10)`):
            BEV layout of the learnable occupancy queries (rows, columns); each query predicts one patch of the latent.
            100 queries keep the training-step overhead near 10% at the PaliGemma-2-3B shape (25 x 25: +45%; see
            benchmarks/RESULTS.md).
        occupancy_latent_shape (`tuple[int, int, int]`, *optional*, defaults to `(128, 50, 50)`):
            (channels, height, width) of the occupancy VAE latent the queries are mapped into; height and width must be
            multiples of the query layout.
        occupancy_module (`str`, *optional*, defaults to `"lm_queries"`):
            `"lm_queries"`: the occupancy queries join the LM sequence after the text and attend to the image tokens
            at every layer. `"cross_attention"` (the paper's Occupancy Transformer): the queries self-attend and
            cross-attend to the image tokens' hidden states in `occupancy_transformer_layers` blocks outside the LM.
            Both run only with occupancy targets or `return_occupancy=True`; text and trajectory never see them.
        occupancy_transformer_layers (`int`, *optional*, defaults to 2):
            Blocks of the cross-attention occupancy module (`occupancy_module="cross_attention"` only).
        occupancy_transformer_heads (`int`, *optional*, defaults to 8):
            Attention heads of its blocks; must divide `text_config.hidden_size`.
        occupancy_source_layer (`int`, *optional*, defaults to -1):
            Which image-token hidden states it reads, as an index into the LM's hidden states
            (`output_hidden_states`, `num_hidden_layers + 1` of them): 0 = the LM input, i.e. the projector output;
            i = the output of layer i; -1 = the last layer's output (after the final norm).
        occupancy_head_hidden_size (`int`, *optional*, defaults to 1024):
            Hidden width of the occupancy head MLP.
        occupancy_num_classes (`int`, *optional*, defaults to 18):
            Semantic classes of the occupancy grid (Occ3D: 17 classes + free).
        occupancy_modules (`bool`, *optional*, defaults to `True`):
            Whether the model has the occupancy queries and head; `False` only for inference exports made with
            `OccVLAForPlanning.without_occupancy_modules()`.
        occupancy_vae_config (`dict`, *optional*):
            Config of the frozen occupancy VAE the model carries, as `OccupancyVAEConfig.to_dict()` with its
            `model_type` (set by `set_occupancy_vae`); `None` = no VAE.
        occupancy_latent_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the latent regression loss (MSE to `vae.encode(occupancy)`).
        occupancy_voxel_loss_weight (`float`, *optional*, defaults to 0.0):
            Weight of the voxel cross-entropy through the frozen VAE decoder.
        occupancy_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the occupancy terms in the total loss.
        num_waypoints (`int`, *optional*, defaults to 6):
            Future waypoints predicted by the trajectory head.
        waypoint_step_s (`float`, *optional*, defaults to 0.5):
            Time between waypoints, seconds.
        ego_status_dim (`int`, *optional*, defaults to 6):
            Number of ego-status features (velocity, acceleration, yaw rate, steering).
        use_ego_status (`bool`, *optional*, defaults to `True`):
            Whether the trajectory head reads the normalised ego status: next to the `<traj>` hidden state in its MLP,
            and through a linear path to the waypoints (`OccVLATrajectoryHead.init_constant_velocity` sets it to the
            constant-velocity extrapolation; the stage-2 recipe does so for new models).
        ego_history_steps (`int`, *optional*, defaults to 0):
            Past ego positions the trajectory head reads next to the ego status: the last `ego_history_steps` of the
            rows' `past_trajectory` (at most NUM_PAST_WAYPOINTS = 4 keyframes, 2 s), in the current ego frame,
            normalised by the processor; 0 = none. Like the ego status, in its MLP and through a linear path to the
            waypoints (without ego status, `init_constant_velocity` sets it to the constant-velocity extrapolation
            of the last past step).
        trajectory_head_hidden_size (`int`, *optional*, defaults to 512):
            Hidden width of the trajectory head MLP.
        trajectory_step_scale_m (`float`, *optional*, defaults to 2.0):
            The head predicts per-step displacements in units of this many metres; waypoints are their cumulative sum.
        trajectory_loss_type (`str`, *optional*, defaults to `"smooth_l1"`):
            `"l1"` or `"smooth_l1"` on waypoints in metres.
        trajectory_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the trajectory loss in the total loss.
        trajectory_position (`str`, *optional*, defaults to `"prompt"`):
            Where the `<traj>` token sits. `"prompt"`: it ends the planning prompt, and the trajectory reads the
            prompt only. `"after_text"`: it follows the answer text (training teacher-forces `answer <traj>`, the
            label at `<traj>` being eos); `plan` generates the text, then feeds `<traj>` in its place in one more
            cached forward step, so the trajectory conditions on the generated meta-action and reasoning.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Tie the LM head to the input embeddings (as PaliGemma).
    """

    model_type = "occvla"
    attribute_map = {"image_token_index": "image_token_id"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="siglip_vision_model",
            init_kwargs={
                "intermediate_size": 4304,
                "hidden_size": 1152,
                "patch_size": 14,
                "image_size": 224,
                "num_hidden_layers": 27,
                "num_attention_heads": 16,
                "vision_use_head": False,
            },
        ),
        "text_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="gemma",
            init_kwargs={
                "hidden_size": 2048,
                "num_hidden_layers": 18,
                "intermediate_size": 16384,
                "num_attention_heads": 8,
                "num_key_value_heads": 1,
                "vocab_size": 257216,
            },
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_type: Literal["linear", "mlp"] = "linear"
    image_token_id: int = 256000
    traj_token_id: int = 257152
    pad_token_id: int | None = 0
    num_views: int = 6
    num_occupancy_queries_hw: tuple[int, int] | list[int] = (10, 10)
    occupancy_latent_shape: tuple[int, int, int] | list[int] = (128, 50, 50)
    occupancy_module: OccupancyModule = "lm_queries"
    occupancy_transformer_layers: int = 2
    occupancy_transformer_heads: int = 8
    occupancy_source_layer: int = -1
    occupancy_head_hidden_size: int = 1024
    occupancy_num_classes: int = NUM_OCC_CLASSES
    occupancy_modules: bool = True
    occupancy_vae_config: dict | None = None
    occupancy_latent_loss_weight: float = 1.0
    occupancy_voxel_loss_weight: float = 0.0
    occupancy_loss_weight: float = 1.0
    num_waypoints: int = NUM_WAYPOINTS
    waypoint_step_s: float = WAYPOINT_STEP_S
    ego_status_dim: int = len(EGO_STATUS_FEATURES)
    use_ego_status: bool = True
    ego_history_steps: int = 0
    trajectory_head_hidden_size: int = 512
    trajectory_step_scale_m: float = 2.0
    trajectory_loss_type: Literal["l1", "smooth_l1"] = "smooth_l1"
    trajectory_loss_weight: float = 1.0
    trajectory_position: TrajectoryPosition = "prompt"
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        # JSON stores tuples as lists; keep one type so round trips compare equal.
        self.num_occupancy_queries_hw = tuple(self.num_occupancy_queries_hw)
        self.occupancy_latent_shape = tuple(self.occupancy_latent_shape)
        self.vision_config.projection_dim = self.text_config.hidden_size

    @classmethod
    def _auto_classes(cls) -> dict[str, type]:
        return {"AutoConfig": OccVLAConfig}

    @property
    def image_seq_length(self) -> int:
        """Image tokens per camera view: (image_size / patch_size) ** 2."""
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2

    @property
    def num_occupancy_queries(self) -> int:
        return self.num_occupancy_queries_hw[0] * self.num_occupancy_queries_hw[1]

    @property
    def occupancy_patch_hw(self) -> tuple[int, int]:
        """Latent cells (rows, columns) each occupancy query predicts."""
        (_, height, width), (rows, cols) = self.occupancy_latent_shape, self.num_occupancy_queries_hw
        return height // rows, width // cols

    def validate_occvla(self) -> None:
        """Reject inconsistent values with errors that name the field."""
        vocab_size = self.text_config.vocab_size
        for name in ("image_token_id", "traj_token_id"):
            value = getattr(self, name)
            if not 0 <= value < vocab_size:
                raise ValueError(
                    f"{name}: expected a token id in [0, {vocab_size}) (text_config.vocab_size), got {value}"
                )
        if self.image_token_id == self.traj_token_id:
            raise ValueError(f"traj_token_id: must differ from image_token_id, both are {self.traj_token_id}")
        if self.num_views < 1:
            raise ValueError(f"num_views: expected >= 1, got {self.num_views}")
        if len(self.num_occupancy_queries_hw) != 2 or min(self.num_occupancy_queries_hw) < 1:
            raise ValueError(
                f"num_occupancy_queries_hw: expected (rows, cols) >= 1, got {self.num_occupancy_queries_hw}"
            )
        if len(self.occupancy_latent_shape) != 3 or min(self.occupancy_latent_shape) < 1:
            raise ValueError(
                f"occupancy_latent_shape: expected (channels, height, width) >= 1, got {self.occupancy_latent_shape}"
            )
        (_, height, width), (rows, cols) = self.occupancy_latent_shape, self.num_occupancy_queries_hw
        if height % rows or width % cols:
            raise ValueError(
                f"num_occupancy_queries_hw: {self.num_occupancy_queries_hw} must divide the latent height x width "
                f"{height} x {width} of occupancy_latent_shape"
            )
        vae_config = self.occupancy_vae_config
        if vae_config is not None and vae_config.get("model_type") != OccupancyVAEConfig.model_type:
            raise ValueError(
                f"occupancy_vae_config: expected a saved {OccupancyVAEConfig.__name__} (set_occupancy_vae records it; "
                f"model_type {OccupancyVAEConfig.model_type!r}) or None, got {vae_config!r}"
            )
        if self.occupancy_module == "cross_attention":
            self._validate_occupancy_transformer()
        for name in (
            "occupancy_latent_loss_weight",
            "occupancy_voxel_loss_weight",
            "occupancy_loss_weight",
            "trajectory_loss_weight",
        ):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name}: expected a finite value >= 0, got {getattr(self, name)}")
        if not 0 <= self.ego_history_steps <= NUM_PAST_WAYPOINTS:
            raise ValueError(
                f"ego_history_steps: expected 0..{NUM_PAST_WAYPOINTS} (the rows hold {NUM_PAST_WAYPOINTS} past "
                f"keyframes, 2 s), got {self.ego_history_steps}"
            )
        for name in ("num_waypoints", "ego_status_dim", "occupancy_num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("waypoint_step_s", "trajectory_step_scale_m"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a finite value > 0, got {getattr(self, name)}")

    def _validate_occupancy_transformer(self) -> None:
        hidden_size, num_layers = self.text_config.hidden_size, self.text_config.num_hidden_layers
        for name in ("occupancy_transformer_layers", "occupancy_transformer_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if hidden_size % self.occupancy_transformer_heads:
            raise ValueError(
                f"occupancy_transformer_heads: {self.occupancy_transformer_heads} must divide "
                f"text_config.hidden_size {hidden_size}"
            )
        source = self.occupancy_source_layer
        if not -(num_layers + 1) <= source <= num_layers:
            raise ValueError(
                f"occupancy_source_layer: expected an index into the LM's {num_layers + 1} hidden states, in "
                f"[{-(num_layers + 1)}, {num_layers}] (0 = projector output, -1 = last layer), "
                f"got {source!r}"
            )


__all__ = ["OccVLAConfig"]
