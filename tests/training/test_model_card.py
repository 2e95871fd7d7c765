"""`render_model_card`: the package template filled from a run, with optional extra sections; Hub-valid metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index
from huggingface_hub.utils import validate_repo_id

from occvla_hf.pretrained import EMBEDDED_MODEL_PATH
from occvla_hf.training.model_card import ModelCardInfo, hub_id, render_model_card
from tests.conftest import tiny_config

LOG_HISTORY = [{"step": 10, "loss": 1.5, "lm_loss": 1.0, "trajectory_loss": 0.5}]


def test_extra_sections_go_between_evaluation_and_limitations() -> None:
    extra = "## Occupancy ablation\n\n| Variant | L2 |\n|---|---|\n| with occupancy | 0.48 |"
    card = render_model_card(
        ModelCardInfo(training_data="sim", model_name="tiny"),
        config=tiny_config(),
        log_history=LOG_HISTORY,
        extra_sections=extra,
    )
    text = str(card)
    assert text.index("## Evaluation") < text.index("## Occupancy ablation") < text.index("## Limitations")
    assert "| with occupancy | 0.48 |" in text
    assert card.data.license == "apache-2.0"


def test_card_without_extra_sections_has_none() -> None:
    text = str(render_model_card(ModelCardInfo(training_data="sim"), config=tiny_config(), log_history=LOG_HISTORY))
    assert "## Occupancy ablation" not in text
    assert "| trajectory_loss | 0.5000 |" in text


def test_card_says_where_the_occupancy_queries_ran() -> None:
    for module, phrase in (
        ("lm_queries", "rode along in the sequence"),
        ("cross_attention", "cross-attended to the image tokens in a separate Occupancy Transformer"),
    ):
        card = render_model_card(
            ModelCardInfo(training_data="sim"), config=tiny_config(occupancy_module=module), log_history=LOG_HISTORY
        )
        assert phrase in str(card)


# ------------------------------------------------------------------------------ Hub metadata (checked offline)

PLANNING_ROW = {f"l2_{h}_m": 0.1 * i for i, h in enumerate(("1s", "2s", "3s", "avg"), 1)} | {
    f"collision_{h}_pct": 0.5 * i for i, h in enumerate(("1s", "2s", "3s", "avg"))
}
EVALUATION = {
    "planning": {"stp3": PLANNING_ROW, "uniad": PLANNING_ROW},
    "qa": {"num_questions": 40, "overall": {"accuracy_pct": 62.5, "correct": 25, "total": 40}},
}


def assert_hub_valid_metadata(card: ModelCard) -> ModelCardData:
    """What the Hub checks before a commit, offline: the YAML parses into `ModelCardData` (the `model-index` into
    `EvalResult`s, raising when malformed) and every `base_model` / `datasets` entry is a valid repo id."""
    parsed = ModelCard(str(card)).data
    for name in [parsed.base_model or [], parsed.datasets or []]:
        for repo_id in [name] if isinstance(name, str) else name:
            validate_repo_id(repo_id)
    if parsed.eval_results:
        index = yaml.safe_load(str(card).split("---")[1])["model-index"]
        assert eval_results_to_model_index(parsed.model_name, parsed.eval_results) == index
    return parsed


def test_metadata_holds_only_hub_ids_and_local_paths_go_in_the_body(tmp_path: Path) -> None:
    base, data = tmp_path / "base", tmp_path / "data"
    base.mkdir(), data.mkdir()
    info = ModelCardInfo(training_data="sim", base_model=str(base), datasets=[str(data), "someone/occvla-sim"])
    card = render_model_card(info, config=tiny_config(), log_history=LOG_HISTORY)
    parsed = assert_hub_valid_metadata(card)
    assert parsed.base_model is None and parsed.datasets == ["someone/occvla-sim"]
    assert f"Initialised from `{base}`" in card.text and f"`{data}`" in card.text
    hub = render_model_card(info.replace(base_model="google/paligemma-3b-pt-224"), config=tiny_config())
    assert assert_hub_valid_metadata(hub).base_model == "google/paligemma-3b-pt-224"
    assert hub_id("not a repo: id") is None and hub_id(str(data)) is None and hub_id("someone/x") == "someone/x"


def test_model_index_holds_l2_collision_and_qa(tmp_path: Path) -> None:
    info = ModelCardInfo(
        training_data="nuscenes", evaluation=EVALUATION, evaluation_data=str(tmp_path), evaluation_split="val"
    )
    parsed = assert_hub_valid_metadata(render_model_card(info, config=tiny_config(), log_history=LOG_HISTORY))
    results = {(r.metric_type, r.metric_config, r.metric_name): r for r in parsed.eval_results}
    assert results[("l2", "stp3", "L2 avg (m, ST-P3)")].metric_value == pytest.approx(0.4)
    assert results[("collision_rate", "uniad", "Collision 3s (%, UniAD)")].metric_value == pytest.approx(1.0)
    qa = results[("accuracy", None, "nuScenes-QA accuracy (%)")]
    assert qa.metric_value == 62.5 and qa.task_type == "visual-question-answering"
    assert len(results) == 2 * 8 + 1
    assert {r.dataset_type for r in parsed.eval_results} == {"nuscenes"}  # a local folder is not a Hub dataset
    assert all(r.dataset_split == "val" for r in parsed.eval_results)
    on_hub = render_model_card(info.replace(evaluation_data="someone/nuscenes-occvla"), config=tiny_config())
    assert {r.dataset_type for r in assert_hub_valid_metadata(on_hub).eval_results} == {"someone/nuscenes-occvla"}


def test_model_index_from_the_training_log_has_the_l2_only() -> None:
    l2 = {key: value for key, value in PLANNING_ROW.items() if key.startswith("l2")}
    log = [
        *LOG_HISTORY,
        {"step": 10, **{f"eval_{p}_{key}": value for p in ("stp3", "uniad") for key, value in l2.items()}},
    ]
    card = render_model_card(ModelCardInfo(training_data="sim"), config=tiny_config(), log_history=log)
    parsed = assert_hub_valid_metadata(card)
    assert {r.metric_type for r in parsed.eval_results} == {"l2"} and len(parsed.eval_results) == 8
    assert "| ST-P3 | 0.100 | 0.200 | 0.300 | 0.400 | - | - | - | - |" in card.text


def test_card_without_evaluation_has_no_model_index() -> None:
    parsed = assert_hub_valid_metadata(render_model_card(ModelCardInfo(), config=tiny_config()))
    assert parsed.eval_results is None and "model-index" not in parsed.to_dict()


def test_shipped_model_card_metadata_is_hub_valid() -> None:
    card = ModelCard.load(EMBEDDED_MODEL_PATH / "README.md")
    parsed = assert_hub_valid_metadata(card)
    assert parsed.datasets is None and parsed.base_model is None  # it was trained from scratch on local sim data
    assert {r.metric_type for r in parsed.eval_results} == {"l2", "collision_rate", "accuracy"}
    assert parsed.pipeline_tag == "image-text-to-text" and parsed.license == "apache-2.0"
