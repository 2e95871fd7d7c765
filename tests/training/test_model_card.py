"""`render_model_card`: the package template filled from a run, with optional extra sections."""

from __future__ import annotations

from occvla_hf.training.model_card import ModelCardInfo, render_model_card
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
