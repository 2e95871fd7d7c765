"""OccVLAProcessor: camera images, prompts, ego status and planning/occupancy targets -> model inputs, in one call.

Token layout of one sample (PaliGemma style), `N = num_views * image_seq_length`:

    <image> * N  <bos>  prompt [<traj>]  "\\n"  |  answer  <eos>
    `------------------ prefix -----------------'   `- suffix -'

`<traj>` ends the planning prompt (the trajectory head reads its final hidden state); QA prompts have none. The prefix
gets `token_type_ids` 0, the suffix 1; `labels` are -100 except on the suffix tokens (answer + eos). Without an answer
(inference) there is no suffix and no `labels`. Padding is on the left for generation and on the right for training.
A training sample without an answer (`None` among the answers: a row trained for occupancy only) is its prefix alone,
with labels all -100.

With `trajectory_position="after_text"` a planning sample is instead

    <image> * N  <bos>  prompt  "\\n"  |  answer  <traj>        (labels: answer  <eos>)

`<traj>` stands where the eos follows the answer: the answer still learns to end with eos, and `plan` feeds `<traj>`
in place of the generated eos, so that the trajectory reads the same sequence in training and inference. A planning
sample without an answer then has the suffix `<traj>` alone (label -100): every planning sample has one `<traj>`.

Task routing: no text at all -> planning (the processor's planning prompt); `question=` or free `text` -> QA (a plain
question is never a planning prompt); `task="planning"` with `text` gives a custom planning prompt. The chat template
renders one user turn as the QA prompt, so `apply_chat_template` and the `image-text-to-text` pipeline's chat mode
build the same input as `question=`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
from transformers import BatchFeature, PreTrainedConfig, ProcessorMixin, SiglipImageProcessorPil
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import load_image
from transformers.processing_utils import ProcessingKwargs, Unpack
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import PaddingStrategy

from ..class_labels import label_name
from ..constants import (
    CAMERA_NAMES,
    DRIVING_COMMANDS,
    EGO_STATUS_FEATURES,
    IGNORE_INDEX,
    IMAGE_TOKEN,
    LABELLED_COLUMN,
    NUM_OCC_CLASSES,
    NUM_PAST_WAYPOINTS,
    NUM_WAYPOINTS,
    PLANNING_TARGETS,
    TRAJ_TOKEN,
    TRAJECTORY_POSITIONS,
)
from ..meta_action import command_from_trajectory
from ..reasoning import join_reasoning, split_reasoning
from ..remote_code import RemoteCodeMixin
from .prompts import COMMAND_PROMPT, DEFAULT_PLANNING_PROMPT, DEFAULT_QA_PROMPT, qa_chat_template

# Image-processor settings that resize only (no rescale, no normalisation): the uint8 pixels of `resized_pixels`.
RESIZE_ONLY: dict[str, bool] = {"do_rescale": False, "do_normalize": False}
# PIL, numpy (H, W, 3) uint8, torch (3, H, W) uint8, or a local path / URL (loaded with transformers' `load_image`)
CameraImage = PIL.Image.Image | np.ndarray | torch.Tensor | str
# One sample: views in CAMERA_NAMES order, or keyed by camera name.
CameraImages = CameraImage | Sequence[CameraImage] | Mapping[str, CameraImage]
Task = Literal["planning", "qa"]
TASKS: tuple[str, ...] = ("planning", "qa")
_MIN_STD: float = 1e-6
# Shared text kwargs the fixed token layout honours; any other one given a value is refused (the layout cannot
# truncate, and always writes bos, the attention mask and the token types).
_TEXT_KWARGS: frozenset[str] = frozenset(
    {"padding", "max_length", "pad_to_multiple_of", "padding_side", "return_tensors"}
)


def ego_status_statistics(
    ego_status: np.ndarray, ego_status_valid: np.ndarray | None = None
) -> tuple[list[float], list[float]]:
    """Per-feature mean and std of ego status (N, F) over its valid entries (N, F) bool.

    A feature with no valid entry gets mean 0 and std 1; a constant feature gets std 1 (normalising leaves it centred).
    """
    ego_status = np.asarray(ego_status, dtype=np.float64)
    if ego_status.ndim != 2 or ego_status.shape[1] != len(EGO_STATUS_FEATURES) or ego_status.shape[0] == 0:
        raise ValueError(f"ego_status: expected (N >= 1, {len(EGO_STATUS_FEATURES)}), got {ego_status.shape}")
    return _masked_statistics(ego_status, ego_status_valid, "ego_status", "ego_status_valid")


def ego_history_statistics(
    past_trajectory: np.ndarray, past_trajectory_mask: np.ndarray | None, steps: int
) -> tuple[list[float], list[float]]:
    """Mean and std of the last `steps` past ego positions (N, H, 2) over the valid ones (N, H) bool, per step and
    axis, flattened in (step, axis) order (2 * steps values each), as `ego_status_statistics` does per feature."""
    past = _last_steps(np.asarray(past_trajectory, dtype=np.float64), steps, "past_trajectory")
    if past.shape[0] == 0:
        raise ValueError(f"past_trajectory: expected (N >= 1, H, 2), got {past.shape}")
    mask = np.ones(past.shape[:2], bool) if past_trajectory_mask is None else np.asarray(past_trajectory_mask)
    valid = np.repeat(_last_steps(mask[..., None], steps, "past_trajectory_mask"), 2, axis=-1)
    flat = past.reshape(len(past), -1)
    return _masked_statistics(flat, valid.reshape(len(past), -1), "past_trajectory", "past_trajectory_mask")


def _last_steps(array: np.ndarray, steps: int, field: str) -> np.ndarray:
    """The last `steps` entries of axis 1 of (N, H, D); ValueError when H < steps (the history is shorter)."""
    if array.ndim != 3:
        raise ValueError(f"{field}: expected (batch, steps, {array.shape[-1]}), got {array.shape}")
    if array.shape[1] < steps:
        raise ValueError(
            f"{field}: holds {array.shape[1]} past positions, ego_history_steps={steps} needs {steps} "
            f"(the rows hold {NUM_PAST_WAYPOINTS} past keyframes, 2 s)"
        )
    return array[:, array.shape[1] - steps :]


def _masked_statistics(
    values: np.ndarray, valid: np.ndarray | None, field: str, valid_field: str
) -> tuple[list[float], list[float]]:
    """Per-column mean and std of `values` (N, F) over the `valid` (N, F) bool entries (see ego_status_statistics)."""
    valid = np.ones(values.shape, dtype=bool) if valid is None else np.asarray(valid)
    if valid.shape != values.shape or valid.dtype != bool:
        raise ValueError(f"{valid_field}: expected {values.shape} bool, got {valid.shape} {valid.dtype}")
    if not np.isfinite(values[valid]).all():
        raise ValueError(f"{field}: valid entries must be finite (NaN or inf found)")
    count = valid.sum(axis=0)
    safe_count = np.maximum(count, 1)
    mean = np.where(valid, values, 0.0).sum(axis=0) / safe_count
    var = (np.where(valid, values - mean, 0.0) ** 2).sum(axis=0) / safe_count
    std = np.sqrt(var)
    std = np.where((count == 0) | (std < _MIN_STD), 1.0, std)
    return mean.tolist(), std.tolist()


def _statistics(
    mean: Sequence[float] | None, std: Sequence[float] | None, size: int, field: str
) -> tuple[list[float], list[float]]:
    """Normalisation statistics as float lists of `size` values (defaults: zeros, ones), checked finite, std > 0."""
    mean = [0.0] * size if mean is None else [float(v) for v in mean]
    std = [1.0] * size if std is None else [float(v) for v in std]
    if len(mean) != size or not all(math.isfinite(v) for v in mean):
        raise ValueError(f"{field}_mean: expected {size} finite values, got {mean}")
    if len(std) != size or not all(math.isfinite(v) and v > 0 for v in std):
        raise ValueError(f"{field}_std: expected {size} finite positive values, got {std}")
    return mean, std


def _to_numpy(value: Any) -> np.ndarray:
    """numpy view of an array-like (torch tensors are detached and moved to the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _stacked(value: Any) -> np.ndarray:
    """An array, or a list of per-sample arrays (datasets rows) stacked along a new first axis."""
    if isinstance(value, (list, tuple)) and value and not np.isscalar(value[0]):
        return np.stack([_to_numpy(item) for item in value])
    return _to_numpy(value)


def _image_to_hwc_uint8(image: Any, field: str) -> np.ndarray:
    """One camera image -> (H, W, 3) uint8; PIL images are converted to RGB, arrays must already have 3 channels."""
    if isinstance(image, str):
        image = load_image(image)
    if isinstance(image, PIL.Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(
                f"{field}: expected a torch (3, H, W) uint8 tensor, got {tuple(image.shape)} {image.dtype}"
            )
        return image.permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{field}: expected a numpy (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
        return image
    raise TypeError(
        f"{field}: expected a PIL image, numpy (H, W, 3) or torch (3, H, W) uint8, or a path/URL, got {type(image)}"
    )


def _is_single_image(value: Any) -> bool:
    """Whether `value` is one camera image (as opposed to a list or dict of them)."""
    return isinstance(value, (PIL.Image.Image, np.ndarray, torch.Tensor, str))


def _is_sample(value: Any) -> bool:
    """Whether `images` holds one sample (an image, a list of images or a dict of views) rather than a batch."""
    if _is_single_image(value) or isinstance(value, Mapping):
        return True
    return isinstance(value, Sequence) and len(value) > 0 and _is_single_image(value[0])


def _as_batch(value: Any, field: str, batch_size: int, allow_none: bool = False) -> list[Any]:
    """A per-sample value (str) or a list of them (`allow_none`: or None) -> a list of length `batch_size`; a single
    str is repeated."""
    if isinstance(value, str):
        return [value] * batch_size
    if not isinstance(value, Sequence) or not all(
        isinstance(item, str) or (allow_none and item is None) for item in value
    ):
        expected = "a list of str or None" if allow_none else "a list of str"
        raise TypeError(f"{field}: expected a str or {expected}, got {type(value)}")
    if len(value) != batch_size:
        raise ValueError(f"{field}: expected {batch_size} entries (one per sample), got {len(value)}")
    return list(value)


def _batch_array(value: Any, field: str, sample_shape: tuple[int, ...] | None, batch_size: int) -> np.ndarray:
    """Array-like of one sample or a batch -> (batch, *sample_shape); `sample_shape=None` accepts any rank-3 shape."""
    if isinstance(value, (list, tuple)) and len(value) > 0 and not np.isscalar(value[0]):
        items = [_to_numpy(item) for item in value]  # list of per-sample arrays (datasets rows)
        shapes = sorted({item.shape for item in items})
        if len(shapes) > 1:
            raise ValueError(f"{field}: all samples must have one shape, got {shapes}")
        array = np.stack(items)
    else:
        array = _to_numpy(value)
    rank = 3 if sample_shape is None else len(sample_shape)
    if array.ndim == rank:
        array = array[None]
    expected = f"(batch={batch_size}, {'X, Y, Z' if sample_shape is None else ', '.join(map(str, sample_shape))})"
    if array.ndim != rank + 1 or array.shape[0] != batch_size:
        raise ValueError(f"{field}: expected {expected}, got {array.shape}")
    if sample_shape is not None and array.shape[1:] != sample_shape:
        raise ValueError(f"{field}: expected {expected}, got {array.shape}")
    return array


def _padded_length(lengths: list[int], text_kwargs: Mapping[str, Any]) -> int:
    """Sequence length of a batch whose samples have `lengths` tokens, under the shared `padding` (default: longest),
    `max_length` and `pad_to_multiple_of` kwargs. Nothing is ever truncated: a sample longer than `max_length` raises.
    """
    padding = text_kwargs.get("padding")
    strategy = (
        PaddingStrategy.LONGEST if padding is None or padding is True else PaddingStrategy(padding or "do_not_pad")
    )
    max_length, multiple = text_kwargs.get("max_length"), text_kwargs.get("pad_to_multiple_of")
    longest = max(lengths)
    if max_length is not None and longest > max_length:
        raise ValueError(f"max_length: a sample has {longest} tokens (> {max_length}) and the layout cannot truncate")
    if strategy is PaddingStrategy.DO_NOT_PAD and len(set(lengths)) > 1:
        raise ValueError(f"padding: samples have {sorted(set(lengths))} tokens; a batch of them needs padding=True")
    if strategy is PaddingStrategy.MAX_LENGTH:
        if max_length is None:
            raise ValueError("max_length: required with padding='max_length'")
        longest = max_length
    return longest if multiple is None else math.ceil(longest / multiple) * multiple


class OccVLAProcessor(RemoteCodeMixin, ProcessorMixin):
    r"""
    Builds OccVLA model inputs from camera images, a task prompt, ego status and (for training) targets.

    Args:
        image_processor (`BaseImageProcessor`):
            SigLIP image processor (resize + normalise); every view is processed independently.
        tokenizer (`PreTrainedTokenizerBase`):
            Tokenizer with bos, eos and pad tokens; `<image>` and `<traj>` are added as special tokens if missing.
        chat_template (`str`, *optional*):
            Jinja chat template turning a conversation into the prompt text (`apply_chat_template`, the
            `image-text-to-text` pipeline's chat mode); defaults to `qa_chat_template(qa_prompt)`, one user turn
            rendered as the QA prompt. It must not write the bos token (the processor places it).
        num_views (`int`, *optional*, defaults to 6):
            Camera views per sample: the first `num_views` cameras of `CAMERA_NAMES` (6 = all, 3 = the front three,
            1 = `CAM_FRONT` only).
        image_seq_length (`int`, *optional*, defaults to 256):
            Image tokens per view (vision tower patches, e.g. (224 / 14) ** 2).
        use_ego_status (`bool`, *optional*, defaults to `True`):
            Whether to emit `ego_status`; `False` drops it entirely (planning without ego status).
        ego_status_mean (`list[float]`, *optional*):
            Per-feature mean of `EGO_STATUS_FEATURES` for normalisation; defaults to zeros.
        ego_status_std (`list[float]`, *optional*):
            Per-feature std of `EGO_STATUS_FEATURES` for normalisation; defaults to ones.
        planning_prompt (`str`, *optional*):
            Planning prompt (the `<traj>` token is appended by the processor).
        qa_prompt (`str`, *optional*):
            QA prompt template with a `{question}` field.
        planning_target (`str`, *optional*, defaults to `"meta_action"`):
            The planning answer `from_rows` builds from a row: `"meta_action"` (the meta-action text) or
            `"reasoning"` (the row's `reasoning` text, a newline, then the meta-action: `reasoning.join_reasoning`).
        trajectory_position (`str`, *optional*, defaults to `"prompt"`):
            Where the planning `<traj>` token goes: `"prompt"` (end of the prompt) or `"after_text"` (after the
            answer, see the layouts above); must match the model's `config.trajectory_position`.
        ego_history_steps (`int`, *optional*, defaults to 0):
            Past ego positions emitted as `ego_history` (the last ones of the given history, e.g. the rows'
            `past_trajectory`); 0 emits none. Must match the model's `config.ego_history_steps`.
        ego_history_mean (`list[float]`, *optional*):
            Mean of the `ego_history_steps` past positions, (step, axis) flattened; defaults to zeros.
        ego_history_std (`list[float]`, *optional*):
            Their std, the same layout; defaults to ones (`fit_ego_history_stats` sets both from a dataset).
        use_command (`bool`, *optional*, defaults to `False`):
            Whether `from_rows` gives planning prompts the UniAD / VAD high-level command of the row
            (`meta_action.command_from_trajectory`, `COMMAND_PROMPT`). The command is derived from the future
            trajectory, so on nuScenes (and the sim) it leaks the ground truth, as it does for UniAD and VAD.
    """

    _auto_map_persists = False  # `from_pretrained` drops a processor's `auto_map`

    def __init__(
        self,
        image_processor: BaseImageProcessor | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        chat_template: str | None = None,
        num_views: int = len(CAMERA_NAMES),
        image_seq_length: int = 256,
        use_ego_status: bool = True,
        ego_status_mean: list[float] | None = None,
        ego_status_std: list[float] | None = None,
        planning_prompt: str = DEFAULT_PLANNING_PROMPT,
        qa_prompt: str = DEFAULT_QA_PROMPT,
        planning_target: str = PLANNING_TARGETS[0],
        trajectory_position: str = TRAJECTORY_POSITIONS[0],
        ego_history_steps: int = 0,
        ego_history_mean: list[float] | None = None,
        ego_history_std: list[float] | None = None,
        use_command: bool = False,
    ) -> None:
        if not isinstance(num_views, int) or not 1 <= num_views <= len(CAMERA_NAMES):
            raise ValueError(f"num_views: expected an int in [1, {len(CAMERA_NAMES)}], got {num_views!r}")
        if not isinstance(image_seq_length, int) or image_seq_length < 1:
            raise ValueError(f"image_seq_length: expected a positive int, got {image_seq_length!r}")
        if planning_target not in PLANNING_TARGETS:
            raise ValueError(f"planning_target: expected one of {PLANNING_TARGETS}, got {planning_target!r}")
        if trajectory_position not in TRAJECTORY_POSITIONS:
            raise ValueError(
                f"trajectory_position: expected one of {TRAJECTORY_POSITIONS}, got {trajectory_position!r}"
            )
        if not isinstance(ego_history_steps, int) or not 0 <= ego_history_steps <= NUM_PAST_WAYPOINTS:
            raise ValueError(
                f"ego_history_steps: expected an int in [0, {NUM_PAST_WAYPOINTS}] (the rows hold "
                f"{NUM_PAST_WAYPOINTS} past keyframes, 2 s), got {ego_history_steps!r}"
            )
        if "{question}" not in qa_prompt:
            raise ValueError(f"qa_prompt: expected a '{{question}}' field, got {qa_prompt!r}")
        chat_template = qa_chat_template(qa_prompt) if chat_template is None else chat_template
        ego_status_mean, ego_status_std = _statistics(
            ego_status_mean, ego_status_std, len(EGO_STATUS_FEATURES), "ego_status"
        )
        ego_history_mean, ego_history_std = _statistics(
            ego_history_mean, ego_history_std, 2 * ego_history_steps, "ego_history"
        )
        if tokenizer is not None:
            for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
                if getattr(tokenizer, name) is None:
                    raise ValueError(f"tokenizer: {name} is required, got None")
            vocab = tokenizer.get_vocab()
            missing = [token for token in (IMAGE_TOKEN, TRAJ_TOKEN) if token not in vocab]
            if missing:
                tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        self.num_views = num_views
        self.image_seq_length = image_seq_length
        self.use_ego_status = use_ego_status
        self.ego_status_mean = ego_status_mean
        self.ego_status_std = ego_status_std
        self.planning_prompt = planning_prompt
        self.qa_prompt = qa_prompt
        self.planning_target = planning_target
        self.trajectory_position = trajectory_position
        self.ego_history_steps = ego_history_steps
        self.ego_history_mean = ego_history_mean
        self.ego_history_std = ego_history_std
        self.use_command = use_command
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @classmethod
    def _auto_classes(cls) -> dict[str, type]:
        return {"AutoProcessor": OccVLAProcessor}

    @classmethod
    def from_model_config(
        cls, config: PreTrainedConfig, tokenizer: PreTrainedTokenizerBase, **kwargs: Any
    ) -> OccVLAProcessor:
        """A processor matching an `OccVLAConfig`: SigLIP image processor at `vision_config.image_size`, the config's
        `num_views`, `image_seq_length`, `use_ego_status`, `trajectory_position` and `ego_history_steps`; `kwargs` set
        the other processor arguments.

        Raises if the tokenizer's `<image>`/`<traj>` ids differ from the config's or exceed its vocabulary.
        """
        image_size = config.vision_config.image_size
        processor = cls(
            image_processor=SiglipImageProcessorPil(size={"height": image_size, "width": image_size}),
            tokenizer=tokenizer,
            num_views=config.num_views,
            image_seq_length=config.image_seq_length,
            use_ego_status=config.use_ego_status,
            trajectory_position=config.trajectory_position,
            ego_history_steps=config.ego_history_steps,
            **kwargs,
        )
        for name in ("image_token_id", "traj_token_id"):
            if getattr(processor, name) != getattr(config, name):
                raise ValueError(
                    f"tokenizer: {name} is {getattr(processor, name)} but config.{name} is {getattr(config, name)}"
                )
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(
                f"tokenizer: {len(tokenizer)} tokens exceed "
                f"config.text_config.vocab_size={config.text_config.vocab_size}"
            )
        return processor

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @property
    def traj_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(TRAJ_TOKEN)

    @property
    def camera_names(self) -> tuple[str, ...]:
        """Cameras this processor reads, in order."""
        return CAMERA_NAMES[: self.num_views]

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "token_type_ids",
            "pixel_values",
            "labels",
            "ego_status",
            "ego_history",
            "trajectory",
            "trajectory_mask",
            "occupancy",
            "occupancy_mask",
        ]

    # ----------------------------------------------------------------------------------------------------- inputs

    def _sample_views(self, sample: Any, field: str) -> list[np.ndarray]:
        """One sample's views -> `num_views` arrays (H, W, 3) uint8 of one size, in `camera_names` order."""
        if isinstance(sample, Mapping):
            unknown = sorted(set(sample) - set(CAMERA_NAMES))
            if unknown:
                raise ValueError(f"{field}: unknown camera names {unknown}; expected names from {CAMERA_NAMES}")
            missing = [name for name in self.camera_names if name not in sample]
            if missing:
                raise ValueError(
                    f"{field}: missing views {missing}; num_views={self.num_views} needs {self.camera_names}"
                )
            views = [_image_to_hwc_uint8(sample[name], f"{field}[{name!r}]") for name in self.camera_names]
        else:
            images = [sample] if _is_single_image(sample) else list(sample)
            if len(images) != self.num_views:
                raise ValueError(
                    f"{field}: expected {self.num_views} views ({', '.join(self.camera_names)}), got {len(images)}; "
                    "a batch is a list of samples, e.g. [[front_1], [front_2]] for num_views=1"
                )
            views = [_image_to_hwc_uint8(image, f"{field}[{index}]") for index, image in enumerate(images)]
        sizes = {view.shape[:2] for view in views}
        if len(sizes) > 1:
            raise ValueError(f"{field}: all views of a sample must share one (H, W) size, got {sorted(sizes)}")
        return views

    def _pixel_values(self, images: Any, images_kwargs: Mapping[str, Any]) -> np.ndarray:
        """Images of one sample or a batch -> pixel values (batch, num_views, 3, H, W) float32; `images_kwargs` go to
        the image processor."""
        samples = [images] if _is_sample(images) else list(images)
        if not samples:
            raise ValueError("images: expected at least one sample, got an empty list")
        views = [
            view for index, sample in enumerate(samples) for view in self._sample_views(sample, f"images[{index}]")
        ]
        # A view given as one array object to several samples (a keyframe's cached views, shared by its questions:
        # `evaluation.runner.prepared_batches`) is processed once.
        unique = {id(view): view for view in views}  # in first-seen order
        position = {key: number for number, key in enumerate(unique)}
        # Read-only views (PIL's buffer, a memory-mapped cache, Arrow) go in as writable copies: the image
        # processor's torchvision backend hands them to `torch.from_numpy`, which warns in every loader process.
        processed = self.image_processor(
            images=[np.require(view, requirements="W") for view in unique.values()],
            return_tensors="np",
            input_data_format="channels_last",
            **images_kwargs,
        )
        pixel_values = processed["pixel_values"].astype(np.float32, copy=False)  # (distinct views, 3, H, W)
        if len(unique) < len(views):
            pixel_values = pixel_values[[position[id(view)] for view in views]]  # (batch * num_views, 3, H, W)
        return pixel_values.reshape(len(samples), self.num_views, *pixel_values.shape[1:])

    def _prompts(self, text: Any, task: str, question: Any, batch_size: int, command: Any = None) -> list[str]:
        """The prompt of each sample: `text` verbatim, else the task template (filled with `question` for QA), with
        the planning `command` after it (`COMMAND_PROMPT`) when given."""
        if command is not None and task != "planning":
            raise ValueError("command: only used with task='planning'")
        if text is not None and question is not None:
            raise ValueError("text/question: give either a full prompt (text) or a question, not both")
        if text is not None:
            prompts = _as_batch(text, "text", batch_size)
        elif task == "qa":
            if question is None:
                raise ValueError("question: required for task='qa' (or pass the full prompt as text)")
            questions = _as_batch(question, "question", batch_size)
            self._check_no_special_tokens(questions, "question")
            prompts = [self.qa_prompt.format(question=q) for q in questions]
        else:
            prompts = [self.planning_prompt] * batch_size
        self._check_no_special_tokens(prompts, "text")
        if command is not None:
            commands = _as_batch(command, "command", batch_size)
            unknown = [c for c in commands if c not in DRIVING_COMMANDS]
            if unknown:
                raise ValueError(f"command: expected one of {DRIVING_COMMANDS}, got {unknown[0]!r}")
            prompts = [COMMAND_PROMPT.format(prompt=p, command=c) for p, c in zip(prompts, commands, strict=True)]
        return prompts

    def _check_no_special_tokens(self, texts: list[str], field: str) -> None:
        """Reject image, `<traj>`, bos and eos tokens in free text: the processor places them, and a stray one
        shifts the image features or the trajectory readout."""
        for index, text in enumerate(texts):
            for token in (IMAGE_TOKEN, TRAJ_TOKEN, self.tokenizer.bos_token, self.tokenizer.eos_token):
                if token in text:
                    raise ValueError(
                        f"{field}[{index}]: must not contain the special token {token!r}, the processor places it"
                    )

    def _token_ids(
        self, prompts: list[str], answers: list[str] | None, task: str, padding_side: str, text_kwargs: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Token ids, attention mask, token types and labels (batch, seq_len) following the layout above, padded as
        `text_kwargs` ask (`padding`, `max_length`, `pad_to_multiple_of`)."""
        image_ids = [self.image_token_id] * (self.num_views * self.image_seq_length)
        after_text = task == "planning" and self.trajectory_position == "after_text"
        prompt_end = (TRAJ_TOKEN if task == "planning" and not after_text else "") + "\n"
        prefixes = [
            image_ids + [self.tokenizer.bos_token_id] + self.tokenizer.encode(p + prompt_end, add_special_tokens=False)
            for p in prompts
        ]
        if answers is None:
            suffixes = suffix_labels = [[] for _ in prompts]
        else:
            end = self.traj_token_id if after_text else self.tokenizer.eos_token_id  # labels end with eos either way
            suffixes, suffix_labels = [], []
            for answer in answers:
                if answer is None:  # nothing to predict; after the text, `<traj>` still closes the sample
                    suffixes.append([self.traj_token_id] if after_text else [])
                    suffix_labels.append([IGNORE_INDEX] * len(suffixes[-1]))
                    continue
                ids = self.tokenizer.encode(answer, add_special_tokens=False)
                suffixes.append(ids + [end])
                suffix_labels.append(ids + [self.tokenizer.eos_token_id])
        seq_len = _padded_length([len(prefix) + len(suffix) for prefix, suffix in zip(prefixes, suffixes)], text_kwargs)
        batch = {
            "input_ids": np.full((len(prompts), seq_len), self.tokenizer.pad_token_id, dtype=np.int64),
            "attention_mask": np.zeros((len(prompts), seq_len), dtype=np.int64),
            "token_type_ids": np.zeros((len(prompts), seq_len), dtype=np.int64),
            "labels": np.full((len(prompts), seq_len), IGNORE_INDEX, dtype=np.int64),
        }
        for row, (prefix, suffix, labels) in enumerate(zip(prefixes, suffixes, suffix_labels)):
            length = len(prefix) + len(suffix)
            start = seq_len - length if padding_side == "left" else 0
            span = slice(start, start + length)
            answer_span = slice(start + len(prefix), start + length)
            batch["input_ids"][row, span] = prefix + suffix
            batch["attention_mask"][row, span] = 1
            batch["token_type_ids"][row, answer_span] = 1
            batch["labels"][row, answer_span] = labels
        if answers is None:
            del batch["labels"]
        return batch

    def _ego_status(self, ego_status: Any, ego_status_valid: Any, batch_size: int) -> np.ndarray:
        """Raw ego status (batch, F) -> normalised float32; entries marked invalid become 0 (the mean)."""
        num_features = len(EGO_STATUS_FEATURES)
        values = _batch_array(ego_status, "ego_status", (num_features,), batch_size).astype(np.float64)
        if ego_status_valid is None:
            valid = np.ones(values.shape, dtype=bool)
        else:
            valid = _batch_array(ego_status_valid, "ego_status_valid", (num_features,), batch_size)
            if valid.dtype != bool:
                raise ValueError(f"ego_status_valid: expected bool, got {valid.dtype}")
        bad = np.argwhere(valid & ~np.isfinite(values))
        if bad.size:
            sample, feature = bad[0]
            raise ValueError(
                f"ego_status: non-finite value at sample {sample}, feature {EGO_STATUS_FEATURES[feature]!r} "
                "(mark missing features in ego_status_valid)"
            )
        normalised = (values - np.asarray(self.ego_status_mean)) / np.asarray(self.ego_status_std)
        return np.where(valid, normalised, 0.0).astype(np.float32)

    def _ego_history(self, ego_history: Any, ego_history_mask: Any, batch_size: int) -> np.ndarray:
        """Past ego positions (batch, H, 2) metres, oldest first -> the last `ego_history_steps` normalised,
        (batch, ego_history_steps, 2) float32; positions marked invalid in `ego_history_mask` become 0 (the mean)."""
        history = _stacked(ego_history)
        history = history[None] if history.ndim == 2 else history
        if history.ndim != 3 or history.shape[0] != batch_size or history.shape[2] != 2:
            raise ValueError(f"ego_history: expected (batch={batch_size}, steps, 2) metres, got {history.shape}")
        history = _last_steps(history.astype(np.float64), self.ego_history_steps, "ego_history")
        if ego_history_mask is None:
            valid = np.ones(history.shape[:2], dtype=bool)
        else:
            mask = _stacked(ego_history_mask)
            mask = mask[None] if mask.ndim == 1 else mask
            if mask.dtype != bool or mask.shape[:1] != (batch_size,):
                raise ValueError(f"ego_history_mask: expected (batch={batch_size}, steps) bool, got {mask.shape} "
                                 f"{mask.dtype}")  # fmt: skip
            valid = _last_steps(mask[..., None], self.ego_history_steps, "ego_history_mask")[..., 0]
        if not np.isfinite(history[valid]).all():
            raise ValueError("ego_history: positions marked valid in ego_history_mask must be finite")
        mean = np.asarray(self.ego_history_mean).reshape(-1, 2)
        std = np.asarray(self.ego_history_std).reshape(-1, 2)
        return np.where(valid[..., None], (history - mean) / std, 0.0).astype(np.float32)

    @staticmethod
    def _trajectory(trajectory: Any, trajectory_mask: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Waypoints (batch, 6, 2) float32 metres + mask (batch, 6) bool; invalid waypoints are set to 0."""
        waypoints = _batch_array(trajectory, "trajectory", (NUM_WAYPOINTS, 2), batch_size).astype(np.float32)
        if trajectory_mask is None:
            mask = np.ones((batch_size, NUM_WAYPOINTS), dtype=bool)
        else:
            mask = _batch_array(trajectory_mask, "trajectory_mask", (NUM_WAYPOINTS,), batch_size)
            if mask.dtype != bool:
                raise ValueError(f"trajectory_mask: expected bool, got {mask.dtype}")
        if not np.isfinite(waypoints[mask]).all():
            raise ValueError("trajectory: waypoints marked valid in trajectory_mask must be finite")
        return np.where(mask[..., None], waypoints, 0.0).astype(np.float32), mask

    @staticmethod
    def _occupancy(occupancy: Any, occupancy_mask: Any, batch_size: int) -> dict[str, np.ndarray]:
        """Occupancy labels (batch, X, Y, Z) as uint8 class ids (values unchanged) and the camera mask (bool)."""
        labels = _batch_array(occupancy, "occupancy", None, batch_size)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"occupancy: expected integer class ids, got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_OCC_CLASSES):
            raise ValueError(
                f"occupancy: class ids must lie in [0, {NUM_OCC_CLASSES}), got [{labels.min()}, {labels.max()}]"
            )
        outputs = {"occupancy": labels.astype(np.uint8, copy=False)}
        if occupancy_mask is not None:
            mask = _batch_array(occupancy_mask, "occupancy_mask", labels.shape[1:], batch_size)
            if mask.dtype != bool:
                raise ValueError(f"occupancy_mask: expected bool, got {mask.dtype}")
            outputs["occupancy_mask"] = mask
        return outputs

    # ------------------------------------------------------------------------------------------------------- API

    def __call__(
        self,
        images: CameraImages | Sequence[CameraImages] | None = None,
        text: str | list[str] | None = None,
        videos: None = None,
        audio: None = None,
        *,
        task: Task | None = None,
        question: str | list[str] | None = None,
        answer: str | list[str] | None = None,
        command: str | list[str] | None = None,
        ego_status: Any = None,
        ego_status_valid: Any = None,
        ego_history: Any = None,
        ego_history_mask: Any = None,
        trajectory: Any = None,
        trajectory_mask: Any = None,
        occupancy: Any = None,
        occupancy_mask: Any = None,
        padding_side: Literal["left", "right"] | None = None,
        return_tensors: Literal["pt", "np"] = "pt",
        **kwargs: Unpack[ProcessingKwargs],
    ) -> BatchFeature:
        """Process one sample or a batch.

        Args:
            images: per sample, `num_views` camera images in `CAMERA_NAMES` order (list) or a dict keyed by camera
                name (names beyond `camera_names` are ignored); a single image when `num_views=1`; or a list of such.
            text: full prompt(s), used verbatim (a str is used for every sample); a QA prompt unless
                `task="planning"` (then `<traj>` is appended).
            videos, audio: accepted for the shared processor signature; must be None (the model reads images).
            task: `"planning"` (prompt ends with `<traj>`) or `"qa"`; default `"qa"` if `question` or `text` is
                given, else `"planning"` (the processor's planning prompt).
            question: QA question(s), filled into `qa_prompt`.
            answer: training target(s): the meta-action text for planning, the answer for QA. Adds `labels`. In a
                list, `None` marks a sample without an answer (trained for occupancy only): labels all -100.
                `text`, `question` and `answer` must not contain the image, `<traj>`, bos or eos tokens (a
                `ValueError` names the field and sample).
            command: planning only: high-level command(s) among `DRIVING_COMMANDS` ("turn left", "turn right", "go
                straight"), written after the prompt (`COMMAND_PROMPT`); see `use_command` for its caveat.
            ego_status: (batch, F) or (F,) raw ego status in `EGO_STATUS_FEATURES` order; normalised.
            ego_status_valid: (batch, F) bool; invalid features (e.g. steering without CAN bus) become 0.
            ego_history: (batch, H, 2) or (H, 2) past ego positions, metres, current ego frame, oldest first (the
                rows' `past_trajectory`); the last `ego_history_steps` are normalised (ignored when it is 0).
            ego_history_mask: (batch, H) bool valid past positions (False before the scene start); invalid become 0.
            trajectory: (batch, 6, 2) or (6, 2) future waypoints, metres, ego frame.
            trajectory_mask: (batch, 6) bool valid waypoints; defaults to all valid.
            occupancy: (batch, X, Y, Z) or (X, Y, Z) Occ3D class ids; passed through as uint8.
            occupancy_mask: (batch, X, Y, Z) bool camera-visibility mask.
            padding_side: `"left"` (generation) or `"right"` (training); defaults to right when `answer` is given.
            return_tensors: `"pt"` or `"np"`.
            kwargs: the shared processing kwargs, flat or as `text_kwargs` / `images_kwargs`: `padding` (`True` /
                `"longest"`, the default; `"max_length"`; `False` for samples of one length), `max_length` (never
                truncates: longer samples raise), `pad_to_multiple_of`, `padding_side`; images kwargs go to the
                image processor. Other text kwargs with a value raise.

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask`, `token_type_ids` (batch, seq_len), `pixel_values`
            (batch, num_views, 3, H, W) and, when their inputs are given, `labels`, `ego_status` (batch, F),
            `trajectory` (batch, 6, 2), `trajectory_mask` (batch, 6), `occupancy` (batch, X, Y, Z) uint8,
            `occupancy_mask` (batch, X, Y, Z) bool.
        """
        if images is None:
            raise ValueError("images: required (the model reads camera views)")
        if videos is not None or audio is not None:
            raise ValueError("videos/audio: expected None, OccVLA reads camera images only")
        merged = self._merge_kwargs(ProcessingKwargs, **kwargs)
        text_kwargs = {key: value for key, value in merged["text_kwargs"].items() if value is not None}
        unsupported = sorted(set(text_kwargs) - _TEXT_KWARGS - {"truncation"})
        if unsupported or text_kwargs.get("truncation") not in (None, False, "do_not_truncate"):
            raise ValueError(
                f"{unsupported or ['truncation']}: not supported (the token layout is fixed and never truncated); "
                f"supported text kwargs: {sorted(_TEXT_KWARGS)}"
            )
        task = ("qa" if question is not None or text is not None else "planning") if task is None else task
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        if task == "planning" and question is not None:
            raise ValueError("question: only used with task='qa'")
        padding_side = text_kwargs.get("padding_side") if padding_side is None else padding_side
        padding_side = ("right" if answer is not None else "left") if padding_side is None else padding_side
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side: expected 'left' or 'right', got {padding_side!r}")
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors: expected 'pt' or 'np', got {return_tensors!r}")

        images_kwargs = {
            key: value
            for key, value in merged["images_kwargs"].items()
            if value is not None and key != "return_tensors"
        }
        pixel_values = self._pixel_values(images, images_kwargs)
        batch_size = pixel_values.shape[0]
        prompts = self._prompts(text, task, question, batch_size, command)
        answers = None if answer is None else _as_batch(answer, "answer", batch_size, allow_none=True)
        if answers is not None:
            self._check_no_special_tokens([a for a in answers if a is not None], "answer")
        data: dict[str, np.ndarray] = {**self._token_ids(prompts, answers, task, padding_side, text_kwargs)}
        data["pixel_values"] = pixel_values
        if ego_status is not None and self.use_ego_status:
            data["ego_status"] = self._ego_status(ego_status, ego_status_valid, batch_size)
        if ego_history is not None and self.ego_history_steps > 0:
            data["ego_history"] = self._ego_history(ego_history, ego_history_mask, batch_size)
        elif ego_history_mask is not None and ego_history is None:
            raise ValueError("ego_history_mask: given without ego_history")
        if trajectory is not None:
            data["trajectory"], data["trajectory_mask"] = self._trajectory(trajectory, trajectory_mask, batch_size)
        elif trajectory_mask is not None:
            raise ValueError("trajectory_mask: given without trajectory")
        if occupancy is not None:
            data.update(self._occupancy(occupancy, occupancy_mask, batch_size))
        elif occupancy_mask is not None:
            raise ValueError("occupancy_mask: given without occupancy")
        return BatchFeature(data=data, tensor_type=return_tensors)

    def from_rows(
        self,
        rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
        *,
        task: Task,
        training: bool = True,
        return_tensors: Literal["pt", "np"] = "pt",
        normalize_images: bool = True,
    ) -> BatchFeature:
        """Process rows of the `planning`/`qa` dataset configs (a list of rows or a column batch) in one call.

        `normalize_images=False` returns `pixel_values` resized but not rescaled or normalised, as uint8 (a quarter
        of the bytes, and the float work left to `normalize_pixels` on the accelerator: what a training loader
        wants); the model itself only takes normalised values.

        Planning rows give `ego_status`(`_valid`), `trajectory`(`_mask`) and, when `training`, the target built
        from `meta_action` (and `reasoning`, for `planning_target="reasoning"`); QA rows give `question` and, when
        `training`, `answer`. With `use_command`, planning prompts get the command of the row's trajectory; with
        `ego_history_steps`, `past_trajectory`(`_mask`) give `ego_history`. Rows carrying the occupancy columns
        (`semantics`, `mask_camera`) also give `occupancy`/`occupancy_mask`. Training batches are right padded with
        labels; otherwise left padded without. A row whose `labelled` column (`LABELLED_COLUMN`) is False has its
        task labels withheld (label-scarce data): it gives the model inputs and its occupancy targets only, no
        answer (labels all -100) and an all-False `trajectory_mask`.
        """
        if isinstance(rows, Mapping):
            columns = list(rows)
            rows = [dict(zip(columns, values)) for values in zip(*(rows[c] for c in columns))]
        if not rows:
            raise ValueError("rows: expected at least one row, got none")
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        required = ["images"]
        if task == "planning":
            required += ["ego_status", "ego_status_valid", "trajectory", "trajectory_mask"]
            required += ["past_trajectory", "past_trajectory_mask"] if self.ego_history_steps else []
            if training:
                required += ["meta_action", *(["reasoning"] if self.planning_target == "reasoning" else [])]
        else:
            required += ["question"] + (["answer"] if training else [])
        for index, row in enumerate(rows):
            missing = [column for column in required if column not in row]
            if missing:
                raise ValueError(f"rows[{index}]: missing columns {missing} for task={task!r}, training={training}")
            if len(row["images"]) != len(CAMERA_NAMES):
                raise ValueError(
                    f"rows[{index}]['images']: expected {len(CAMERA_NAMES)} views, got {len(row['images'])}"
                )

        def column(name: str) -> list[Any]:
            return [row[name] for row in rows]

        labelled = [bool(row.get(LABELLED_COLUMN, True)) for row in rows]

        inputs: dict[str, Any] = {
            "images": [dict(zip(CAMERA_NAMES, row["images"])) for row in rows],
            "task": task,
            "padding_side": "right" if training else "left",
            "return_tensors": return_tensors,
        }
        if task == "planning":
            inputs["ego_status"] = column("ego_status")
            inputs["ego_status_valid"] = [np.asarray(valid, dtype=bool) for valid in column("ego_status_valid")]
            inputs["trajectory"] = column("trajectory")
            inputs["trajectory_mask"] = [
                np.asarray(mask, dtype=bool) & keep for mask, keep in zip(column("trajectory_mask"), labelled)
            ]
            if self.use_command:
                inputs["command"] = [
                    command_from_trajectory(np.asarray(points, np.float32), mask=mask)
                    for points, mask in zip(column("trajectory"), inputs["trajectory_mask"], strict=True)
                ]
            if self.ego_history_steps:
                inputs["ego_history"] = [np.asarray(past, dtype=np.float32) for past in column("past_trajectory")]
                inputs["ego_history_mask"] = [np.asarray(mask, dtype=bool) for mask in column("past_trajectory_mask")]
            if training:
                inputs["answer"] = [self.planning_answer(row) if keep else None for row, keep in zip(rows, labelled)]
        else:
            inputs["question"] = column("question")
            if training:
                inputs["answer"] = [row["answer"] if keep else None for row, keep in zip(rows, labelled)]
        if all("semantics" in row for row in rows):
            inputs["occupancy"] = column("semantics")
            if all("mask_camera" in row for row in rows):
                inputs["occupancy_mask"] = [np.asarray(mask, dtype=bool) for mask in column("mask_camera")]
        if normalize_images:
            return self(**inputs)
        batch = self(**inputs, images_kwargs=RESIZE_ONLY)
        pixels = batch["pixel_values"]  # resized 0..255 integers in float32: exact in uint8
        batch["pixel_values"] = pixels.to(torch.uint8) if return_tensors == "pt" else pixels.astype(np.uint8)
        return batch

    def resized_pixels(self, images: Any) -> np.ndarray:
        """Images of one sample or a batch (as `__call__` takes them) -> (batch, num_views, 3, H, W) uint8: resized by
        the image processor, neither rescaled nor normalised (what `normalize_pixels` takes, and what
        `training.image_cache` stores)."""
        return self._pixel_values(images, RESIZE_ONLY).astype(np.uint8)

    def normalize_pixels(self, pixel_values: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(batch, num_views, 3, H, W) uint8 resized images (`from_rows(normalize_images=False)`) -> the
        normalised `pixel_values` the model takes, in `dtype` on their device: the image processor's rescale and
        mean/std, one fused multiply-add."""
        if pixel_values.dtype != torch.uint8 or pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values: expected (batch, views, 3, H, W) uint8, got {tuple(pixel_values.shape)} "
                f"{pixel_values.dtype}"
            )
        processor = self.image_processor
        mean = torch.tensor(processor.image_mean, dtype=torch.float32, device=pixel_values.device)
        std = torch.tensor(processor.image_std, dtype=torch.float32, device=pixel_values.device)
        scale = (processor.rescale_factor / std).view(3, 1, 1)
        shift = (-mean / std).view(3, 1, 1)
        return torch.addcmul(shift, pixel_values.to(torch.float32), scale).to(dtype)

    def fit_ego_history_stats(self, past_trajectory: Any, past_trajectory_mask: Any = None) -> None:
        """Set the ego-history statistics from a dataset's past positions (N, H, 2) and validity (N, H) bool."""
        mask = None if past_trajectory_mask is None else _to_numpy(past_trajectory_mask)
        self.ego_history_mean, self.ego_history_std = ego_history_statistics(
            _to_numpy(past_trajectory), mask, self.ego_history_steps
        )

    def planning_answer(self, row: Mapping[str, Any]) -> str:
        """The training answer of a planning row for `planning_target`."""
        meta_action = label_name("meta_action", row["meta_action"])  # a built dataset stores the class id
        if self.planning_target == "reasoning":
            return join_reasoning(row["reasoning"], meta_action)
        return meta_action

    def fit_ego_status_stats(self, ego_status: Any, ego_status_valid: Any = None) -> None:
        """Set the normalisation statistics from a dataset's ego status (N, F) and validity (N, F) bool."""
        mean, std = ego_status_statistics(
            _to_numpy(ego_status), None if ego_status_valid is None else _to_numpy(ego_status_valid)
        )
        self.ego_status_mean, self.ego_status_std = mean, std

    def post_process_plan(self, generated_ids: Any, trajectory: Any) -> list[dict[str, Any]]:
        """Generated answer tokens (batch, new_tokens) and predicted waypoints (batch, 6, 2) -> one plan per sample.

        `generated_ids` holds only the generated tokens (slice off the prompt: `output[:, input_ids.shape[1]:]`).
        Each plan is `{"meta_action": str, "trajectory": np.ndarray (6, 2) float32 metres}`, plus `"reasoning": str`
        for `planning_target="reasoning"`; the meta-action is the first line of the decoded text, or its last line
        after the reasoning (parse it with `MetaAction.from_text` to check it against the vocabulary).
        """
        waypoints = _to_numpy(trajectory).astype(np.float32)
        texts = self.tokenizer.batch_decode(_to_numpy(generated_ids).tolist(), skip_special_tokens=True)
        if waypoints.shape != (len(texts), NUM_WAYPOINTS, 2):
            raise ValueError(f"trajectory: expected ({len(texts)}, {NUM_WAYPOINTS}, 2), got {waypoints.shape}")
        plans = []
        for text, points in zip(texts, waypoints):
            if self.planning_target == "reasoning":
                reasoning, meta_action = split_reasoning(text)
                plans.append({"meta_action": meta_action, "reasoning": reasoning, "trajectory": points})
            else:
                plans.append({"meta_action": (text.strip().splitlines() or [""])[0].strip(), "trajectory": points})
        return plans

    def post_process_image_text_to_text(
        self, generated_outputs: Any, skip_special_tokens: bool = True, **kwargs: Any
    ) -> list[str]:
        """Token ids (batch, seq_len) or (seq_len,) -> one decoded text per row (the image, `<traj>` and pad tokens
        are special, so they are dropped by default); `kwargs` go to the tokenizer's `batch_decode`."""
        ids = _to_numpy(generated_outputs)
        if ids.ndim not in (1, 2):
            raise ValueError(f"generated_outputs: expected (batch, seq_len) or (seq_len,) token ids, got {ids.shape}")
        rows = ids[None] if ids.ndim == 1 else ids
        return self.tokenizer.batch_decode(rows.tolist(), skip_special_tokens=skip_special_tokens, **kwargs)


__all__ = ["OccVLAProcessor", "ego_history_statistics", "ego_status_statistics"]
