"""OccVLAProcessor: output shapes and layout, label masking, padding, ego status, targets, rows, save/load, errors."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoProcessor

from occvla_hf.constants import CAMERA_NAMES, EGO_STATUS_FEATURES, IMAGE_TOKEN, TRAJ_TOKEN
from occvla_hf.meta_action import META_ACTION_NAMES
from occvla_hf.modeling import OccVLAConfig
from occvla_hf.processing import OccVLAProcessor, ego_status_statistics
from occvla_hf.processing.processing_occvla import ego_history_statistics
from occvla_hf.reasoning import join_reasoning, split_reasoning

from .conftest import IMAGE_SEQ_LENGTH, IMAGE_SIZE_PX

F = len(EGO_STATUS_FEATURES)
GRID = (4, 5, 2)  # small occupancy grid: the processor passes any (X, Y, Z) through


# ---------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("num_views", [1, 6])
def test_training_batch_shapes_and_dtypes(make_processor, camera_images, num_views: int) -> None:
    processor = make_processor(num_views=num_views)
    batch = processor(
        images=camera_images(2, num_views),
        answer=["keep, straight", "decelerate, right lane change"],
        ego_status=np.ones((2, F), dtype=np.float32),
        trajectory=np.zeros((2, 6, 2), dtype=np.float32),
        trajectory_mask=np.ones((2, 6), dtype=bool),
        occupancy=np.zeros((2, *GRID), dtype=np.uint8),
        occupancy_mask=np.ones((2, *GRID), dtype=bool),
    )
    seq_len = batch["input_ids"].shape[1]
    expected = {
        "input_ids": ((2, seq_len), torch.int64),
        "attention_mask": ((2, seq_len), torch.int64),
        "token_type_ids": ((2, seq_len), torch.int64),
        "labels": ((2, seq_len), torch.int64),
        "pixel_values": ((2, num_views, 3, IMAGE_SIZE_PX, IMAGE_SIZE_PX), torch.float32),
        "ego_status": ((2, F), torch.float32),
        "trajectory": ((2, 6, 2), torch.float32),
        "trajectory_mask": ((2, 6), torch.bool),
        "occupancy": ((2, *GRID), torch.uint8),
        "occupancy_mask": ((2, *GRID), torch.bool),
    }
    assert {key: (tuple(value.shape), value.dtype) for key, value in batch.items()} == expected
    assert set(batch) <= set(processor.model_input_names)


def test_inference_batch_has_no_labels_and_no_suffix(make_processor, camera_images) -> None:
    batch = make_processor()(images=camera_images(2, 6))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "pixel_values"}
    assert int(batch["token_type_ids"].sum()) == 0


def test_return_tensors_np_gives_numpy_arrays(make_processor, camera_images) -> None:
    batch = make_processor()(images=camera_images(1, 6), return_tensors="np")
    assert isinstance(batch["input_ids"], np.ndarray) and isinstance(batch["pixel_values"], np.ndarray)


# ---------------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize("num_views", [1, 6])
def test_planning_layout_images_bos_prompt_traj_newline(make_processor, camera_images, tokenizer, num_views) -> None:
    processor = make_processor(num_views=num_views)
    ids = processor(images=camera_images(1, num_views))["input_ids"][0].tolist()
    num_image_tokens = num_views * IMAGE_SEQ_LENGTH
    assert ids[:num_image_tokens] == [tokenizer.image_token_id] * num_image_tokens
    assert ids[num_image_tokens] == tokenizer.bos_token_id
    assert ids.count(tokenizer.image_token_id) == num_image_tokens
    assert ids[-2:] == [processor.traj_token_id, tokenizer.encode("\n")[0]]
    assert tokenizer.decode(ids[num_image_tokens + 1 :]) == f"{processor.planning_prompt}{TRAJ_TOKEN}\n"


def test_qa_layout_fills_the_template_and_has_no_traj_token(make_processor, camera_images, tokenizer) -> None:
    processor = make_processor(num_views=1)
    ids = processor(images=camera_images(1, 1), question="Is there a bus?")["input_ids"][0].tolist()
    assert processor.traj_token_id not in ids
    expected = processor.qa_prompt.format(question="Is there a bus?") + "\n"
    assert tokenizer.decode(ids[IMAGE_SEQ_LENGTH + 1 :]) == expected


def test_text_replaces_the_template_and_a_plain_text_is_a_question(make_processor, camera_images, tokenizer) -> None:
    processor = make_processor(num_views=1)
    batch = processor(images=camera_images(1, 1), text="Drive safely.", task="planning")
    assert tokenizer.decode(batch["input_ids"][0, IMAGE_SEQ_LENGTH + 1 :]) == f"Drive safely.{TRAJ_TOKEN}\n"
    for task in ("qa", None):  # free text without a task is QA: no <traj>, so no ego status is needed
        batch = processor(images=camera_images(1, 1), text="How many cars are to the front left?", task=task)
        assert (
            tokenizer.decode(batch["input_ids"][0, IMAGE_SEQ_LENGTH + 1 :]) == "How many cars are to the front left?\n"
        )
        assert processor.traj_token_id not in batch["input_ids"][0].tolist()


def test_chat_template_renders_one_user_turn_as_the_qa_prompt(make_processor, camera_images, tokenizer) -> None:
    processor = make_processor(num_views=1)
    views = camera_images(1, 1)
    conversation = [
        {
            "role": "user",
            "content": [{"type": "image", "image": views[0][0]}, {"type": "text", "text": "Is there a bus?"}],
        }
    ]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt == processor.qa_prompt.format(question="Is there a bus?")
    from_chat = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    from_question = processor(images=views, question="Is there a bus?")
    assert set(from_chat) == set(from_question)
    for key in from_question:
        torch.testing.assert_close(from_chat[key], from_question[key])
    with pytest.raises(Exception, match="one user turn"):
        processor.apply_chat_template(conversation + [{"role": "assistant", "content": "yes"}])


def test_custom_chat_template_is_kept_and_the_default_follows_the_qa_prompt(make_processor) -> None:
    template = "{% for message in messages %}user: {{ message['content'][0]['text'] }}\n{% endfor %}"
    assert make_processor(num_views=1, chat_template=template).chat_template == template
    processor = make_processor(num_views=1, qa_prompt="Q: {question} A:")
    assert processor.apply_chat_template([{"role": "user", "content": "Why {{ x }}?"}]) == "Q: Why {{ x }}? A:"


def test_shared_padding_kwargs(make_processor, camera_images, tokenizer) -> None:
    processor = make_processor(num_views=1)
    images = camera_images(2, 1)
    questions = ["Is there a bus?", "How many moving pedestrians are to the back left of the parked truck?"]
    longest = processor(images=images, question=questions)
    for kwargs in ({"padding": True}, {"padding": "longest"}, {"text_kwargs": {"padding": True}}):
        torch.testing.assert_close(processor(images=images, question=questions, **kwargs), longest)
    seq_len = longest["input_ids"].shape[1]
    padded = processor(images=images, question=questions, padding="max_length", max_length=seq_len + 3)
    assert padded["input_ids"].shape == (2, seq_len + 3)
    assert (padded["input_ids"][:, :3] == tokenizer.pad_token_id).all()  # left padding for generation
    torch.testing.assert_close(padded["input_ids"][:, 3:], longest["input_ids"])
    multiple = processor(images=images, question=questions, pad_to_multiple_of=64)
    assert multiple["input_ids"].shape[1] == -(-seq_len // 64) * 64
    right = processor(images=images, question=questions, text_kwargs={"padding_side": "right"})
    assert (right["attention_mask"][:, 0] == 1).all()
    same = processor(images=images, question=["Why?", "Why?"], padding=False)
    assert same["attention_mask"].all()
    with pytest.raises(ValueError, match="padding=True"):
        processor(images=images, question=questions, padding=False)
    with pytest.raises(ValueError, match="max_length"):
        processor(images=images, question=questions, max_length=seq_len - 1)
    with pytest.raises(ValueError, match="truncation"):
        processor(images=images, question=questions, truncation=True)
    with pytest.raises(ValueError, match="return_offsets_mapping"):
        processor(images=images, question=questions, return_offsets_mapping=True)
    with pytest.raises(ValueError, match="videos/audio"):
        processor(images=images, question=questions, videos=[[1]])


def test_images_kwargs_reach_the_image_processor(make_processor, camera_images) -> None:
    processor = make_processor(num_views=1)
    batch = processor(images=camera_images(1, 1), question="Why?", images_kwargs={"size": {"height": 14, "width": 14}})
    assert batch["pixel_values"].shape[-2:] == (14, 14)


def test_image_paths_are_loaded(make_processor, camera_images, tmp_path: Path) -> None:
    processor = make_processor(num_views=1)
    view = camera_images(1, 1)[0][0]
    PIL.Image.fromarray(view).save(tmp_path / "front.png")
    from_path = processor(images=[str(tmp_path / "front.png")], question="Why?")
    torch.testing.assert_close(from_path["pixel_values"], processor(images=[view], question="Why?")["pixel_values"])


def test_post_process_image_text_to_text_decodes_each_row(make_processor, tokenizer) -> None:
    processor = make_processor(num_views=1)
    yes = [tokenizer.image_token_id, tokenizer.bos_token_id, *tokenizer.encode("yes"), tokenizer.eos_token_id]
    no = tokenizer.encode("no")
    rows = torch.tensor([yes, [tokenizer.pad_token_id] * (len(yes) - len(no)) + no])  # left padded
    assert processor.post_process_image_text_to_text(rows) == ["yes", "no"]
    assert processor.post_process_image_text_to_text(rows[0]) == ["yes"]
    with pytest.raises(ValueError, match="generated_outputs"):
        processor.post_process_image_text_to_text(rows[None])


# ------------------------------------------------------------------------------------------ labels / padding


def test_labels_cover_exactly_the_answer_and_eos(make_processor, camera_images, tokenizer) -> None:
    answers = ["keep, straight", "accelerate, left lane change", "stop, right turn"]
    questions = ["Is there a bus?", "How many moving pedestrians are to the back left of the parked truck?", "Why?"]
    batch = make_processor()(images=camera_images(3, 6), question=questions, answer=answers)
    for row, answer in enumerate(answers):
        answer_positions = batch["labels"][row] != -100
        assert torch.equal(answer_positions, batch["token_type_ids"][row] == 1)
        assert torch.equal(batch["labels"][row][answer_positions], batch["input_ids"][row][answer_positions])
        assert tokenizer.decode(batch["labels"][row][answer_positions]) == answer + tokenizer.eos_token


def test_right_and_left_padding_hold_the_same_tokens(make_processor, camera_images, tokenizer) -> None:
    processor = make_processor(num_views=1)
    images = camera_images(2, 1)
    questions = ["Is there a bus?", "What is the status of the car that is to the front right of the stopped bus?"]
    right = processor(images=images, question=questions, answer=["yes", "moving"])
    left = processor(images=images, question=questions, answer=["yes", "moving"], padding_side="left")
    lengths = right["attention_mask"].sum(dim=1)
    assert lengths[0] < lengths[1]  # mixed prompt lengths
    seq_len = right["input_ids"].shape[1]
    for row, length in enumerate(lengths.tolist()):
        assert right["attention_mask"][row, :length].all() and not right["attention_mask"][row, length:].any()
        assert (
            left["attention_mask"][row, seq_len - length :].all()
            and not left["attention_mask"][row, : seq_len - length].any()
        )
        assert (right["input_ids"][row, length:] == tokenizer.pad_token_id).all()
        assert (left["input_ids"][row, : seq_len - length] == tokenizer.pad_token_id).all()
        for key in ("input_ids", "token_type_ids", "labels"):
            assert torch.equal(right[key][row, :length], left[key][row, seq_len - length :])
        assert (right["labels"][row, length:] == -100).all()


def test_generation_default_is_left_padding_ending_on_the_prompt(make_processor, camera_images, tokenizer) -> None:
    questions = ["Is there a bus?", "What is the status of the car that is to the front right of the stopped bus?"]
    batch = make_processor(num_views=1)(images=camera_images(2, 1), question=questions)
    newline_id = tokenizer.encode("\n")[0]
    assert (batch["input_ids"][:, -1] == newline_id).all()
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][0, 0]


# ---------------------------------------------------------------------------------------------------- images


def test_pixel_values_are_the_image_processors_output_per_view(make_processor, camera_images) -> None:
    processor = make_processor()
    views = camera_images(1, 6)[0]
    expected = processor.image_processor(images=views, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(processor(images=views)["pixel_values"][0], expected)


def test_views_shared_by_samples_give_the_pixels_of_copies(make_processor, camera_images) -> None:
    """Samples given the same view arrays (a keyframe's, under each of its questions) are processed once each
    view, with the pixel values of processing every sample's own copies."""
    processor = make_processor()
    first, second = camera_images(2, 6)
    shared = [first, second, first, [second[0], *first[1:]]]
    copies = [[view.copy() for view in sample] for sample in shared]
    pixels = processor(images=shared, question=["Is there a car?"] * 4)["pixel_values"]
    assert torch.equal(pixels, processor(images=copies, question=["Is there a car?"] * 4)["pixel_values"])
    assert not torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[3, 0], pixels[1, 0])


def test_read_only_views_reach_the_image_processor_writable(make_processor, camera_images, monkeypatch) -> None:
    """PIL buffers, memory-mapped caches and Arrow give read-only arrays; the torchvision backend's
    `torch.from_numpy` warns about each, in every loader process. The image processor gets writable copies, the
    same pixels, and the caller's arrays are left as they are."""
    processor = make_processor()
    views = camera_images(1, 6)[0]
    read_only = [view.copy() for view in views]
    for view in read_only:
        view.flags.writeable = False
    received = []
    image_processor = processor.image_processor

    class Recording:
        def __call__(self, images, **kwargs):
            received.extend(images)
            return image_processor(images=images, **kwargs)

        def __getattr__(self, name):
            return getattr(image_processor, name)

    expected = processor(images=views)["pixel_values"]
    monkeypatch.setattr(processor, "image_processor", Recording())
    pixels = processor(images=read_only)["pixel_values"]
    assert len(received) == 6 and all(view.flags.writeable for view in received)
    assert torch.equal(pixels, expected)
    assert not any(view.flags.writeable for view in read_only)


def test_pil_numpy_torch_and_dict_inputs_agree(make_processor, camera_images) -> None:
    processor = make_processor()
    views = camera_images(1, 6)[0]
    reference = processor(images=views)["pixel_values"]
    variants = (
        [PIL.Image.fromarray(view) for view in views],
        [torch.from_numpy(view).permute(2, 0, 1).contiguous() for view in views],
        {name: view for name, view in reversed(list(zip(CAMERA_NAMES, views)))},
    )
    for images in variants:
        torch.testing.assert_close(processor(images=images)["pixel_values"], reference)


def test_front_only_processor_reads_cam_front_from_a_six_view_dict(make_processor, camera_images) -> None:
    processor = make_processor(num_views=1)
    views = camera_images(1, 6)[0]
    from_dict = processor(images=dict(zip(CAMERA_NAMES, views)))["pixel_values"]
    torch.testing.assert_close(from_dict, processor(images=views[0])["pixel_values"])
    assert processor.camera_names == ("CAM_FRONT",)


def test_three_views_are_the_front_cameras(make_processor, camera_images) -> None:
    processor = make_processor(num_views=3)
    views = camera_images(1, 6)[0]
    assert processor.camera_names == ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT")
    from_dict = processor(images=dict(zip(CAMERA_NAMES, views)))["pixel_values"]
    torch.testing.assert_close(from_dict, processor(images=views[:3])["pixel_values"])


def tiny_model_config(tokenizer, **overrides) -> OccVLAConfig:
    """OccVLAConfig with 28 px images (4 tokens per view), 2 views and the test tokenizer's vocabulary."""
    vision = {"model_type": "siglip_vision_model", "hidden_size": 8, "intermediate_size": 8, "image_size": 28}
    vision |= {"num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 14, "vision_use_head": False}
    text = {"model_type": "gemma", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "head_dim": 4}
    text |= {"num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": len(tokenizer)}
    kwargs = {"vision_config": vision, "text_config": text, "num_views": 2, "use_ego_status": False}
    kwargs |= {"image_token_id": tokenizer.image_token_id, "traj_token_id": tokenizer.traj_token_id}
    return OccVLAConfig(**{**kwargs, **overrides})


def test_from_model_config_matches_the_model(tokenizer, camera_images) -> None:
    processor = OccVLAProcessor.from_model_config(tiny_model_config(tokenizer), tokenizer)
    assert (processor.num_views, processor.image_seq_length, processor.use_ego_status) == (2, 4, False)
    batch = processor(images=camera_images(1, 2), ego_status=np.zeros(F))
    assert batch["pixel_values"].shape == (1, 2, 3, 28, 28) and "ego_status" not in batch
    assert int((batch["input_ids"] == tokenizer.image_token_id).sum()) == 8
    with pytest.raises(ValueError, match="traj_token_id"):
        OccVLAProcessor.from_model_config(tiny_model_config(tokenizer, traj_token_id=7), tokenizer)
    after_text = tiny_model_config(tokenizer, trajectory_position="after_text")
    assert OccVLAProcessor.from_model_config(after_text, tokenizer).trajectory_position == "after_text"


# ---------------------------------------------------------------------------------------- ego status / targets


def test_ego_status_is_normalised_and_invalid_features_are_zero(make_processor, camera_images) -> None:
    processor = make_processor(num_views=1, ego_status_mean=[1, 0, 0, 0, 0, 0], ego_status_std=[2, 1, 1, 1, 1, 4])
    raw = np.array([[5.0, 1.0, 0.5, 0.0, 0.1, np.nan]])
    valid = np.array([[True, True, True, True, True, False]])
    batch = processor(images=camera_images(1, 1), ego_status=raw, ego_status_valid=valid)
    torch.testing.assert_close(batch["ego_status"], torch.tensor([[2.0, 1.0, 0.5, 0.0, 0.1, 0.0]]))


def test_use_ego_status_false_drops_it(make_processor, camera_images) -> None:
    batch = make_processor(num_views=1, use_ego_status=False)(images=camera_images(1, 1), ego_status=np.ones(F))
    assert "ego_status" not in batch


def test_ego_status_statistics_hand_checked() -> None:
    ego = np.array([[1.0, 0, 0, 0, 0, 7.0], [3.0, 0, 0, 0, 0, 100.0]])
    valid = np.ones_like(ego, dtype=bool)
    valid[1, 5] = False
    mean, std = ego_status_statistics(ego, valid)
    assert mean == [2.0, 0, 0, 0, 0, 7.0]
    assert std == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # constant features (and single samples) keep std 1
    mean, std = ego_status_statistics(np.array([[0.0] * 6, [4.0] * 6, [8.0] * 6]))
    np.testing.assert_allclose(std, [np.sqrt(32 / 3)] * 6)


def test_fit_ego_status_stats_updates_the_processor(make_processor) -> None:
    processor = make_processor()
    processor.fit_ego_status_stats(torch.tensor([[0.0] * 6, [2.0] * 6]))
    assert processor.ego_status_mean == [1.0] * 6 and processor.ego_status_std == [1.0] * 6


def test_masked_waypoints_may_be_nan_and_become_zero(make_processor, camera_images) -> None:
    trajectory = np.arange(12, dtype=np.float32).reshape(6, 2)
    trajectory[4:] = np.nan
    mask = np.array([True] * 4 + [False] * 2)
    batch = make_processor(num_views=1)(images=camera_images(1, 1), trajectory=trajectory, trajectory_mask=mask)
    expected = torch.from_numpy(np.nan_to_num(trajectory))[None]
    torch.testing.assert_close(batch["trajectory"], expected)
    assert batch["trajectory_mask"].tolist() == [mask.tolist()]


def test_occupancy_passes_through_unchanged(make_processor, camera_images) -> None:
    rng = np.random.default_rng(1)
    occupancy = rng.integers(0, 18, (2, *GRID)).astype(np.uint8)
    mask = rng.random((2, *GRID)) > 0.5
    batch = make_processor(num_views=1)(images=camera_images(2, 1), occupancy=list(occupancy), occupancy_mask=mask)
    assert np.array_equal(batch["occupancy"].numpy(), occupancy) and np.array_equal(
        batch["occupancy_mask"].numpy(), mask
    )
    as_int64 = make_processor(num_views=1)(images=camera_images(2, 1), occupancy=occupancy.astype(np.int64).tolist())
    assert as_int64["occupancy"].dtype == torch.uint8 and np.array_equal(as_int64["occupancy"].numpy(), occupancy)


# --------------------------------------------------------------------------------------------------- rows


def planning_row(rng: np.random.Generator, with_occupancy: bool = False) -> dict:
    row = {
        "sample_token": "t",
        "images": [PIL.Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in CAMERA_NAMES],
        "ego_status": rng.normal(size=F).astype(np.float32).tolist(),
        "ego_status_valid": [True] * (F - 1) + [False],
        "trajectory": rng.normal(size=(6, 2)).astype(np.float32).tolist(),
        "trajectory_mask": [True] * 6,
        "meta_action": "keep, straight",
    }
    if with_occupancy:
        row["semantics"] = rng.integers(0, 18, GRID).astype(np.uint8).tolist()
        row["mask_camera"] = (rng.random(GRID) > 0.5).tolist()
    return row


def test_from_rows_planning_matches_the_direct_call(make_processor, tokenizer) -> None:
    rng = np.random.default_rng(2)
    rows = [planning_row(rng, with_occupancy=True), planning_row(rng, with_occupancy=True)]
    processor = make_processor(num_views=6)
    batch = processor.from_rows(rows, task="planning")
    direct = processor(
        images=[row["images"] for row in rows],
        answer=[row["meta_action"] for row in rows],
        ego_status=np.array([row["ego_status"] for row in rows]),
        ego_status_valid=np.array([row["ego_status_valid"] for row in rows]),
        trajectory=np.array([row["trajectory"] for row in rows]),
        occupancy=np.array([row["semantics"] for row in rows], dtype=np.uint8),
        occupancy_mask=np.array([row["mask_camera"] for row in rows]),
    )
    assert set(batch) == set(direct)
    for key in batch:
        torch.testing.assert_close(batch[key], direct[key])
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    torch.testing.assert_close(processor.from_rows(columns, task="planning")["input_ids"], batch["input_ids"])


def test_uint8_pixels_normalised_later_equal_the_normalised_rows(make_processor) -> None:
    rng = np.random.default_rng(5)
    rows = [planning_row(rng), planning_row(rng)]
    processor = make_processor(num_views=6)
    normalised = processor.from_rows(rows, task="planning")
    resized = processor.from_rows(rows, task="planning", normalize_images=False)
    assert resized["pixel_values"].dtype == torch.uint8
    assert resized["pixel_values"].shape == normalised["pixel_values"].shape
    torch.testing.assert_close(processor.normalize_pixels(resized["pixel_values"]), normalised["pixel_values"])
    assert all(torch.equal(resized[key], normalised[key]) for key in normalised if key != "pixel_values")
    assert (
        processor.from_rows(rows, task="planning", normalize_images=False, return_tensors="np")["pixel_values"].dtype
        == np.uint8
    )
    with pytest.raises(ValueError, match="pixel_values: expected .* uint8"):
        processor.normalize_pixels(normalised["pixel_values"])


def test_from_rows_qa_for_inference_is_left_padded_without_labels(make_processor, tokenizer) -> None:
    rng = np.random.default_rng(3)
    rows = [
        {"images": planning_row(rng)["images"], "question": q, "answer": "yes"}
        for q in ("Is there a bus?", "Are there any other things that are the same status as the car?")
    ]
    processor = make_processor(num_views=1)
    inference = processor.from_rows(rows, task="qa", training=False)
    assert "labels" not in inference and inference["attention_mask"][:, -1].all()
    training = processor.from_rows(rows, task="qa")
    assert tokenizer.decode(training["labels"][0][training["labels"][0] != -100]) == "yes" + tokenizer.eos_token


def test_from_rows_missing_column_raises_naming_it(make_processor) -> None:
    row = planning_row(np.random.default_rng(4))
    del row["meta_action"]
    with pytest.raises(ValueError, match="meta_action"):
        make_processor().from_rows([row], task="planning")
    make_processor().from_rows([row], task="planning", training=False)  # inference needs no target
    row["images"] = row["images"][:5]
    with pytest.raises(ValueError, match=r"rows\[0\]\['images'\]"):
        make_processor().from_rows([row], task="planning", training=False)


REASONING = "Objects: none. Road: ego at 8.0 m/s, no lead vehicle. Decision: keep, straight, because the path is clear."


def test_the_reasoning_target_is_the_reasoning_then_the_meta_action(make_processor, tokenizer) -> None:
    rng = np.random.default_rng(7)
    rows = [{**planning_row(rng), "reasoning": REASONING}, {**planning_row(rng), "meta_action": "stop, left turn"}]
    rows[1]["reasoning"] = REASONING.replace("keep, straight", "stop, left turn")
    processor = make_processor(planning_target="reasoning")
    batch = processor.from_rows(rows, task="planning")
    for row, labels in zip(rows, batch["labels"], strict=True):
        answer = tokenizer.decode(labels[labels != -100], skip_special_tokens=True)
        assert answer == f"{row['reasoning']}\n{row['meta_action']}"
        assert answer == join_reasoning(row["reasoning"], row["meta_action"])
    labels = make_processor().from_rows(rows, task="planning")["labels"][0]
    assert tokenizer.decode(labels[labels != -100]) == "keep, straight" + tokenizer.eos_token
    del rows[0]["reasoning"]
    with pytest.raises(ValueError, match=r"rows\[0\]: missing columns \['reasoning'\]"):
        processor.from_rows(rows, task="planning")
    processor.from_rows(rows, task="planning", training=False)  # inference needs no target


def test_after_text_layout_puts_traj_after_the_answer_where_the_labels_end_with_eos(
    make_processor, camera_images, tokenizer
) -> None:
    processor = make_processor(num_views=1, trajectory_position="after_text")
    batch = processor(images=camera_images(1, 1), answer="keep, straight", padding_side="right")
    prompt = make_processor(num_views=1)(images=camera_images(1, 1))["input_ids"][0]
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    answer = tokenizer.encode("keep, straight")
    assert ids.tolist() == [*prompt[prompt != tokenizer.traj_token_id].tolist(), *answer, tokenizer.traj_token_id]
    assert labels[labels != -100].tolist() == [*answer, tokenizer.eos_token_id]
    assert batch["token_type_ids"][0].tolist() == [0] * (len(ids) - len(answer) - 1) + [1] * (len(answer) + 1)
    inference = processor(images=camera_images(1, 1))["input_ids"][0]
    assert tokenizer.traj_token_id not in inference.tolist()
    qa = processor(images=camera_images(1, 1), question="Is there a bus?", answer="yes")
    assert qa["input_ids"][0, -1] == tokenizer.eos_token_id  # QA keeps its layout


@pytest.mark.parametrize("position", ["prompt", "after_text"])
def test_an_answer_of_none_is_the_prompt_alone_with_nothing_to_predict(
    make_processor, camera_images, tokenizer, position: str
) -> None:
    processor = make_processor(num_views=1, trajectory_position=position)
    images = camera_images(2, 1)
    batch = processor(images=images, answer=[None, "keep, straight"], padding_side="right")
    labelled = processor(images=images[1:], answer="keep, straight", padding_side="right")
    torch.testing.assert_close(batch["input_ids"][1], labelled["input_ids"][0])
    torch.testing.assert_close(batch["labels"][1], labelled["labels"][0])
    ids, labels, types = batch["input_ids"][0], batch["labels"][0], batch["token_type_ids"][0]
    prompt = make_processor(num_views=1)(images=images[:1])["input_ids"][0].tolist()  # bos, prompt, <traj>, newline
    if position == "prompt":
        expected, suffix = prompt, []
    else:  # the prompt without its <traj>, then <traj> closes the sample as after an answer
        expected, suffix = [t for t in prompt if t != tokenizer.traj_token_id], [tokenizer.traj_token_id]
    length = int(batch["attention_mask"][0].sum())
    assert ids[:length].tolist() == expected + suffix and (ids[length:] == tokenizer.pad_token_id).all()
    assert (labels == -100).all() and types[:length].tolist() == [0] * len(expected) + [1] * len(suffix)
    assert (batch["input_ids"] == tokenizer.traj_token_id).sum(dim=1).tolist() == [1, 1]
    none_only = processor(images=images, answer=[None, None], padding_side="right")
    assert (none_only["labels"] == -100).all()
    with pytest.raises(TypeError, match="answer: expected a str or a list of str or None"):
        processor(images=images, answer=[None, 3])


def decoded_prompt(tokenizer, inputs: dict, index: int) -> str:
    """The text of sample `index` of processor outputs, without special tokens or padding."""
    ids = inputs["input_ids"][index][inputs["attention_mask"][index].bool()]
    return tokenizer.decode(ids, skip_special_tokens=True).rstrip()


def test_unlabelled_rows_give_their_inputs_and_occupancy_but_no_task_target(make_processor, tokenizer) -> None:
    rng = np.random.default_rng(9)
    rows = [planning_row(rng, with_occupancy=True) for _ in range(3)]
    rows[0]["labelled"], rows[1]["labelled"] = True, False  # the third has no column: labelled
    rows[1]["trajectory"] = [[2.0 * step, 1.5 * step] for step in range(1, 7)]  # a left turn, were it labelled
    processor = make_processor(num_views=6, use_command=True)
    batch = processor.from_rows(rows, task="planning")
    assert (batch["labels"][1] == -100).all() and (batch["labels"][[0, 2]] != -100).any(dim=1).all()
    assert batch["trajectory_mask"].tolist() == [[True] * 6, [False] * 6, [True] * 6]
    assert (batch["trajectory"][1] == 0).all()
    torch.testing.assert_close(batch["occupancy"][1], torch.tensor(rows[1]["semantics"], dtype=torch.uint8))
    labelled = processor.from_rows([{**rows[1], "labelled": True}], task="planning", training=False)
    torch.testing.assert_close(batch["ego_status"][1], labelled["ego_status"][0])  # the inputs stay
    torch.testing.assert_close(batch["pixel_values"][1], labelled["pixel_values"][0])
    assert decoded_prompt(tokenizer, batch, 1).endswith("go straight.")  # no future, no command: VAD's default
    assert decoded_prompt(tokenizer, labelled, 0).endswith("turn left.")
    unlabelled = {**rows[2], "labelled": False}
    inference = processor.from_rows([rows[2], unlabelled], task="planning", training=False)
    assert "labels" not in inference and inference["trajectory_mask"].tolist() == [[True] * 6, [False] * 6]
    qa = [{"images": rows[0]["images"], "question": "Is there a bus?", "answer": "yes", "labelled": False}]
    assert (processor.from_rows(qa, task="qa")["labels"] == -100).all()


def test_ego_history_is_the_last_steps_normalised_and_invalid_positions_are_zero(make_processor, camera_images) -> None:
    past = np.array([[[-8.0, 0.5], [-6.0, 0.4], [-4.0, 0.2], [-2.0, 0.1]]], np.float32)  # (1, 4, 2), oldest first
    mask = np.array([[False, True, False, True]])
    processor = make_processor(
        num_views=1, ego_history_steps=3, ego_history_mean=[-6.0, 0.0] * 3, ego_history_std=[2.0, 0.5] * 3
    )
    history = processor(images=camera_images(1, 1), ego_history=past, ego_history_mask=mask)["ego_history"]
    expected = [[[0.0, 0.8], [0.0, 0.0], [2.0, 0.2]]]  # steps -1.5, -1.0 (invalid), -0.5 s
    torch.testing.assert_close(history, torch.tensor(expected))
    assert "ego_history" not in make_processor(num_views=1)(images=camera_images(1, 1), ego_history=past)
    with pytest.raises(ValueError, match="ego_history: holds 2 past positions, ego_history_steps=3 needs 3"):
        processor(images=camera_images(1, 1), ego_history=past[:, 2:])
    with pytest.raises(ValueError, match=r"ego_history: expected \(batch=1, steps, 2\)"):
        processor(images=camera_images(1, 1), ego_history=np.zeros((1, 4, 3)))
    with pytest.raises(ValueError, match="ego_history_steps: expected an int in \\[0, 4\\]"):
        make_processor(ego_history_steps=5)
    with pytest.raises(ValueError, match="ego_history_mean: expected 6 finite values"):
        make_processor(ego_history_steps=3, ego_history_mean=[0.0] * 4)


def test_ego_history_statistics_hand_checked_and_rows_give_the_history(make_processor) -> None:
    past = np.array([[[9.0, 9.0], [-4.0, 1.0], [-2.0, 0.0]], [[9.0, 9.0], [-2.0, 3.0], [np.nan, np.nan]]])
    mask = np.array([[True, True, True], [True, True, False]])
    mean, std = ego_history_statistics(past, mask, steps=2)
    assert mean == [-3.0, 2.0, -2.0, 0.0] and std == [1.0, 1.0, 1.0, 1.0]  # the constant last step gets std 1
    with pytest.raises(ValueError, match="past_trajectory: holds 3 past positions, ego_history_steps=4"):
        ego_history_statistics(past, mask, steps=4)
    processor = make_processor(ego_history_steps=2)
    processor.fit_ego_history_stats(past, mask)
    assert (processor.ego_history_mean, processor.ego_history_std) == (mean, std)
    rng = np.random.default_rng(8)
    row = {**planning_row(rng), "past_trajectory": past[0, :2].tolist() + [[-1.0, 0.0]]}
    row["past_trajectory_mask"] = [True, True, True]
    history = processor.from_rows([row], task="planning")["ego_history"]
    torch.testing.assert_close(history, torch.tensor([[[-1.0, -1.0], [1.0, 0.0]]]))
    del row["past_trajectory_mask"]
    with pytest.raises(ValueError, match="past_trajectory_mask"):
        processor.from_rows([row], task="planning", training=False)


def test_a_command_follows_the_planning_prompt_and_rows_derive_it_from_the_future(
    make_processor, camera_images, tokenizer
) -> None:
    processor = make_processor(num_views=1)
    batch = processor(images=camera_images(2, 1), command=["turn left", "go straight"])
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"]]
    assert texts[0].startswith(processor.planning_prompt + " Command: turn left.")
    assert texts[1].startswith(processor.planning_prompt + " Command: go straight.")
    vocabulary = r"\('turn left', 'turn right', 'go straight'\)"
    with pytest.raises(ValueError, match=rf"command: expected one of {vocabulary}, got 'u-turn'"):
        processor(images=camera_images(1, 1), command="u-turn")
    with pytest.raises(ValueError, match="command: only used with task='planning'"):
        processor(images=camera_images(1, 1), question="Is there a bus?", command="turn left")
    rng = np.random.default_rng(9)
    row = {**planning_row(rng), "trajectory": [[2.0 * k, -0.5 * k] for k in range(1, 7)]}  # 3 m to the right
    with_command = make_processor(use_command=True).from_rows([row], task="planning", training=False)
    direct = make_processor()(images=[row["images"]], command="turn right", ego_status=[row["ego_status"]],
                              ego_status_valid=[row["ego_status_valid"]])  # fmt: skip
    torch.testing.assert_close(with_command["input_ids"], direct["input_ids"])
    assert not torch.equal(make_processor().from_rows([row], task="planning", training=False)["input_ids"],
                           direct["input_ids"])  # fmt: skip


def test_split_reasoning_inverts_join_reasoning() -> None:
    assert split_reasoning(join_reasoning(REASONING, "keep, straight")) == (REASONING, "keep, straight")
    assert split_reasoning("  keep, straight \n") == ("", "keep, straight") and split_reasoning("") == ("", "")
    with pytest.raises(ValueError, match="one line each"):
        join_reasoning("a\nb", "keep, straight")


# ----------------------------------------------------------------------------------------- post-processing


def test_post_process_plan_pairs_decoded_meta_action_with_waypoints(make_processor, tokenizer) -> None:
    processor = make_processor()
    generated = [
        tokenizer.encode("decelerate, left turn") + [tokenizer.eos_token_id, tokenizer.pad_token_id],
        tokenizer.encode("keep, straight\n[(1.00,0.00)]") + [tokenizer.eos_token_id],
    ]
    width = max(map(len, generated))
    generated = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in generated])
    trajectory = torch.arange(24, dtype=torch.float32).reshape(2, 6, 2)
    plans = processor.post_process_plan(generated, trajectory)
    assert [plan["meta_action"] for plan in plans] == ["decelerate, left turn", "keep, straight"]
    assert all(isinstance(plan["trajectory"], np.ndarray) and plan["trajectory"].shape == (6, 2) for plan in plans)
    np.testing.assert_array_equal(plans[1]["trajectory"], trajectory[1].numpy())
    with pytest.raises(ValueError, match="trajectory"):
        processor.post_process_plan(generated, trajectory[:1])
    reasoned = torch.tensor([tokenizer.encode(join_reasoning(REASONING, "keep, straight")) + [tokenizer.eos_token_id]])
    plan = make_processor(planning_target="reasoning").post_process_plan(reasoned, trajectory[:1])[0]
    assert (plan["reasoning"], plan["meta_action"]) == (REASONING, "keep, straight")


# ---------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_and_auto_processor(make_processor, camera_images, tmp_path: Path) -> None:
    processor = make_processor(
        num_views=1, use_ego_status=False, ego_status_mean=[1.0] * F, ego_status_std=[2.0] * F,
        planning_prompt="Plan.", qa_prompt="Q: {question}", chat_template="{{ messages[0]['content'][0]['text'] }}",
        planning_target="reasoning",
    )  # fmt: skip
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["num_views"] == 1 and config["ego_status_std"] == [2.0] * F and config["qa_prompt"] == "Q: {question}"
    assert config["planning_target"] == "reasoning"
    for loaded in (OccVLAProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is OccVLAProcessor
        assert loaded.to_dict() == processor.to_dict() and loaded.chat_template == processor.chat_template
        images = camera_images(2, 1)
        kwargs = {"images": images, "question": ["Is there a bus?", "Why?"], "answer": ["yes", "no"]}
        original, reloaded = processor(**kwargs), loaded(**kwargs)
        assert set(original) == set(reloaded)
        for key in original:
            torch.testing.assert_close(original[key], reloaded[key])


# ------------------------------------------------------------------------------------------------ bad input

VIEWS = [np.random.default_rng(5).integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in CAMERA_NAMES]
NAMED_VIEWS = dict(zip(CAMERA_NAMES, VIEWS))
BAD_CALLS = {
    "missing view": ({"images": dict(list(NAMED_VIEWS.items())[:5])}, r"images\[0\].*missing views"),
    "extra view": ({"images": VIEWS + VIEWS[:1]}, r"images\[0\].*expected 6 views"),
    "unknown camera": ({"images": {**NAMED_VIEWS, "CAM_TOP": VIEWS[0]}}, r"images\[0\].*CAM_TOP"),
    "4 channels": ({"images": VIEWS[:5] + [np.zeros((20, 24, 4), np.uint8)]}, r"images\[0\]\[5\].*\(H, W, 3\)"),
    "1-channel tensor": ({"images": VIEWS[:5] + [torch.zeros(1, 20, 24, dtype=torch.uint8)]}, r"images\[0\]\[5\]"),
    "float array": ({"images": VIEWS[:5] + [np.zeros((20, 24, 3), np.float32)]}, r"images\[0\]\[5\].*uint8"),
    "mixed sizes": ({"images": VIEWS[:5] + [np.zeros((30, 24, 3), np.uint8)]}, r"images\[0\].*one \(H, W\) size"),
    "no images": ({"images": None}, "images"),
    "NaN ego status": ({"ego_status": [0, 0, np.nan, 0, 0, 0]}, "ego_status.*'ax'"),
    "ego features": ({"ego_status": np.zeros((1, 5))}, r"ego_status: expected \(batch=1, 6\)"),
    "ego batch": ({"ego_status": np.zeros((2, 6))}, r"ego_status: expected \(batch=1, 6\)"),
    "trajectory shape": ({"trajectory": np.zeros((1, 6, 3))}, r"trajectory: expected \(batch=1, 6, 2\)"),
    "ragged occupancy": ({"occupancy": [np.zeros(GRID, np.uint8), np.zeros((4, 5, 3), np.uint8)]}, "occupancy: all"),
    "NaN waypoint": ({"trajectory": np.full((6, 2), np.nan)}, "trajectory"),
    "mask dtype": ({"trajectory": np.zeros((6, 2)), "trajectory_mask": np.ones(6)}, "trajectory_mask"),
    "mask alone": ({"trajectory_mask": np.ones(6, bool)}, "trajectory_mask"),
    "occupancy floats": ({"occupancy": np.zeros(GRID, np.float32)}, "occupancy"),
    "occupancy class": ({"occupancy": np.full(GRID, 18, np.uint8)}, "occupancy"),
    "occupancy mask shape": (
        {"occupancy": np.zeros(GRID, np.uint8), "occupancy_mask": np.ones((1, 4, 5, 3), bool)},
        "occupancy_mask",
    ),
    "answers count": ({"answer": ["a", "b"]}, "answer"),
    "qa without question": ({"task": "qa"}, "question"),
    "unknown task": ({"task": "drive"}, "task"),
    "text and question": ({"text": "x", "question": "y"}, "text/question"),
    "special token in text": ({"text": f"look {IMAGE_TOKEN}"}, r"text\[0\]"),
    "padding side": ({"padding_side": "top"}, "padding_side"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_inputs_raise_errors_naming_the_field(make_processor, case: str) -> None:
    kwargs, pattern = BAD_CALLS[case]
    with pytest.raises((ValueError, TypeError), match=pattern):
        make_processor()(**{"images": VIEWS, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_views": 0}, "num_views"),
        ({"num_views": 7}, "num_views"),
        ({"image_seq_length": 0}, "image_seq_length"),
        ({"qa_prompt": "no field"}, "qa_prompt"),
        ({"ego_status_mean": [0.0] * 5}, "ego_status_mean"),
        ({"ego_status_std": [0.0] * 6}, "ego_status_std"),
        ({"planning_target": "thoughts"}, "planning_target"),
        ({"trajectory_position": "end"}, "trajectory_position"),
    ],
)
def test_bad_settings_raise_naming_the_setting(make_processor, kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_processor(**kwargs)


def planning_features(meta_action: datasets.Value | datasets.ClassLabel, **extra) -> datasets.Features:
    """`datasets` features of the planning columns of `planning_row`, with `meta_action` stored as given, plus
    `extra` columns."""
    return datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "ego_status": datasets.Sequence(datasets.Value("float32"), length=F),
            "ego_status_valid": datasets.Sequence(datasets.Value("bool"), length=F),
            "trajectory": datasets.Array2D((6, 2), "float32"),
            "trajectory_mask": datasets.Sequence(datasets.Value("bool"), length=6),
            "meta_action": meta_action,
            **extra,
        }
    )


@pytest.mark.parametrize("dataset_format", [None, "numpy", "torch"])
def test_from_rows_reads_a_datasets_table_in_any_format(make_processor, dataset_format: str | None) -> None:
    rng = np.random.default_rng(6)
    rows = [planning_row(rng, with_occupancy=True) for _ in range(2)]
    features = planning_features(
        datasets.Value("string"),
        semantics=datasets.Array3D(GRID, "uint8"),
        mask_camera=datasets.Array3D(GRID, "bool"),
    )
    table = datasets.Dataset.from_list([{key: row[key] for key in features} for row in rows], features=features)
    processor = make_processor()
    expected = processor.from_rows(rows, task="planning")
    batch = processor.from_rows(table.with_format(dataset_format)[:2], task="planning")
    assert set(batch) == set(expected)
    for key in batch:
        torch.testing.assert_close(batch[key], expected[key])


@pytest.mark.parametrize("dataset_format", [None, "numpy", "torch"])
def test_from_rows_trains_on_the_meta_action_of_a_class_label_column(make_processor, dataset_format) -> None:
    """A built dataset stores the meta-action as its class id: the answer is its text, in any format."""
    rng = np.random.default_rng(7)
    rows = [planning_row(rng) for _ in range(2)]
    rows[1]["meta_action"] = "decelerate, left turn"
    features = planning_features(datasets.ClassLabel(names=list(META_ACTION_NAMES)))
    table = datasets.Dataset.from_list([{key: row[key] for key in features} for row in rows], features=features)
    assert table["meta_action"] == [10, 6]
    processor = make_processor(num_views=6)
    expected = processor.from_rows(rows, task="planning")
    batch = processor.from_rows(table.with_format(dataset_format)[:2], task="planning")
    torch.testing.assert_close(batch["labels"], expected["labels"])
    assert processor.planning_answer({"meta_action": 6}) == "decelerate, left turn"
