"""The `driving-planning` pipeline: camera views + ego status -> `{"meta_action", "trajectory"}` through `model.plan`.

Registered with transformers' `PIPELINE_REGISTRY` by `occvla_hf.modeling` (with the Auto classes), so that
`transformers.pipeline("driving-planning", model=...)` works once the package is imported. Questions go through the
standard `image-text-to-text` pipeline (the processor routes free text to QA).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import Pipeline

PLANNING_TASK: str = "driving-planning"
# Keys of one planning input (a dict, e.g. a row of the `planning` dataset config; other keys are ignored).
_INPUT_KEYS: tuple[str, ...] = ("images", "ego_status", "ego_status_valid")


class DrivingPlanningPipeline(Pipeline):
    """Plans with an `OccVLAForPlanning` and its `OccVLAProcessor`.

    ```python
    import occvla_hf  # noqa: F401  (registers the task)
    from transformers import pipeline

    planner = pipeline("driving-planning", model="path-or-hub-id")
    plan = planner(six_camera_images, ego_status=ego)  # {"meta_action": str, "trajectory": (6, 2) float32 metres}
    plans = planner([row_1, row_2])  # dicts with "images", "ego_status" (and "ego_status_valid")
    ```
    Generation parameters go to `model.plan`: `max_new_tokens` or `generate_kwargs={...}` per call, or any of them as
    keyword arguments of `pipeline(...)`; with `num_return_sequences=n` each input gives a list of n plans.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True

    def _sanitize_parameters(
        self, max_new_tokens: int | None = None, generate_kwargs: dict[str, Any] | None = None
    ) -> tuple[dict, dict, dict]:
        generate_kwargs = {} if generate_kwargs is None else dict(generate_kwargs)
        if max_new_tokens is not None:
            if "max_new_tokens" in generate_kwargs:
                raise ValueError("max_new_tokens: given twice (as an argument and in generate_kwargs)")
            generate_kwargs["max_new_tokens"] = max_new_tokens
        return {}, {"generate_kwargs": generate_kwargs}, {}

    def __call__(
        self, images: Any, ego_status: Any = None, ego_status_valid: Any = None, **kwargs: Any
    ) -> dict[str, Any] | list[Any]:
        """Plan one sample (`images` = its views, list in `CAMERA_NAMES` order or dict by camera name, with
        `ego_status` (F,)) or several (`images` = a dict or a list of dicts with the keys "images", "ego_status",
        "ego_status_valid")."""
        if isinstance(images, Mapping) and "images" in images:
            inputs: Any = images
        elif isinstance(images, list) and images and isinstance(images[0], Mapping) and "images" in images[0]:
            inputs = images
        else:
            inputs = {"images": images, "ego_status": ego_status, "ego_status_valid": ego_status_valid}
        if inputs is images and (ego_status is not None or ego_status_valid is not None):
            raise ValueError("ego_status: give it inside each input dict, not as an argument, when passing dicts")
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs: Mapping[str, Any]) -> Any:
        sample = {key: inputs.get(key) for key in _INPUT_KEYS}
        return self.processor(**sample, task="planning", return_tensors="pt").to(dtype=self.dtype)

    def _forward(self, model_inputs: Mapping[str, Any], generate_kwargs: dict[str, Any]) -> dict[str, Any]:
        plan = self.model.plan(**model_inputs, **self._prepare_generate_kwargs(generate_kwargs))
        generated = plan.sequences[:, model_inputs["input_ids"].shape[1] :]
        return {"generated_ids": generated, "trajectory": plan.trajectory}

    def postprocess(self, model_outputs: Mapping[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        plans = self.processor.post_process_plan(model_outputs["generated_ids"], model_outputs["trajectory"].float())
        return plans[0] if len(plans) == 1 else plans


__all__ = ["PLANNING_TASK", "DrivingPlanningPipeline"]
