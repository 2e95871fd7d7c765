"""OccupancyVAE: shapes, latents (VQ and KL), losses, validation, save/load and Auto classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, AutoModel

from occvla_hf.constants import NUM_OCC_CLASSES, OCC_GRID_SHAPE
from occvla_hf.modeling.configuration_occupancy_vae import OccupancyVAEConfig
from occvla_hf.modeling.occupancy_vae import OccupancyVAE, lovasz_softmax_loss

SMALL_GRID = (16, 16, 4)


@pytest.fixture(autouse=True)
def _seeded_torch() -> None:
    """Weights and restarts drawn from torch's global generator: every test sees the same ones."""
    torch.manual_seed(0)


def small_config(**overrides) -> OccupancyVAEConfig:
    """A few-thousand-parameter VAE on 16 x 16 x 4 grids with an 8 x 8 latent."""
    kwargs = {
        "grid_shape": SMALL_GRID,
        "class_embedding_dim": 4,
        "block_channels": (8, 16),
        "num_res_blocks": 1,
        "norm_num_groups": 4,
        "latent_channels": 4,
        "codebook_size": 16,
    }
    kwargs.update(overrides)
    return OccupancyVAEConfig(**kwargs)


def random_voxels(batch: int = 2, grid: tuple[int, int, int] = SMALL_GRID, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, NUM_OCC_CLASSES, (batch, *grid), generator=generator, dtype=torch.uint8)


def test_default_config_is_the_occ3d_grid_with_a_50x50_latent():
    config = OccupancyVAEConfig()
    assert config.grid_shape == OCC_GRID_SHAPE
    assert config.num_classes == NUM_OCC_CLASSES
    assert config.latent_shape == (config.latent_channels, 50, 50)


def test_default_grid_encodes_to_50x50_and_decodes_to_voxel_logits():
    config = OccupancyVAEConfig(
        class_embedding_dim=2, block_channels=(4, 4, 4), num_res_blocks=1, norm_num_groups=2, latent_channels=3
    )
    model = OccupancyVAE(config).eval()
    with torch.no_grad():
        latent = model.encode(torch.full((1, *OCC_GRID_SHAPE), 17, dtype=torch.uint8))
        logits = model.decode(latent)
    assert latent.shape == (1, 3, 50, 50) and latent.dtype == torch.float32
    assert logits.shape == (1, NUM_OCC_CLASSES, *OCC_GRID_SHAPE) and logits.dtype == torch.float32


@pytest.mark.parametrize("latent_type", ["vq", "kl"])
def test_small_grid_shapes_and_dtypes_through_encode_decode_forward(latent_type):
    model = OccupancyVAE(small_config(latent_type=latent_type)).eval()
    voxels = random_voxels()
    with torch.no_grad():
        latent = model.encode(voxels)
        assert torch.equal(latent, model.encode(voxels.long()))  # uint8 and int64 ids are the same input
        logits = model.decode(latent)
        output = model(voxels)
    assert latent.shape == (2, 4, 8, 8) and latent.dtype == torch.float32
    assert logits.shape == (2, NUM_OCC_CLASSES, *SMALL_GRID)
    assert output.logits.shape == logits.shape
    torch.testing.assert_close(output.latent, latent)
    assert output.loss.dim() == 0 and torch.isfinite(output.loss)
    assert output.ce_loss is not None and output.lovasz_loss is not None
    if latent_type == "vq":
        assert output.indices.shape == (2, 8, 8) and output.indices.dtype == torch.int64
        assert output.kl_loss is None
    else:
        assert output.indices is None and output.perplexity is None and output.commitment_loss is None


def test_bf16_model_encodes_and_decodes_in_bf16():
    model = OccupancyVAE(small_config()).to(torch.bfloat16).eval()
    with torch.no_grad():
        latent = model.encode(random_voxels())
        logits = model.decode(latent)
    assert latent.dtype == torch.bfloat16 and logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()


def test_vq_uses_its_codebook_on_random_data():
    model = OccupancyVAE(small_config(latent_type="vq")).eval()
    voxels = random_voxels(batch=4)
    with torch.no_grad():
        output = model(voxels)
        indices = model.encode_indices(voxels)
        latent = model.encode(voxels)
    assert output.perplexity > 1.0
    assert torch.unique(indices).numel() > 1
    assert torch.equal(indices, output.indices)
    assert torch.equal(model.latent_from_indices(indices), latent)  # the tokens reproduce the latent exactly
    codes, snapped = model.quantize(latent + 1e-4)  # a prediction near the codes snaps back to them
    assert torch.equal(codes, latent) and torch.equal(snapped, indices)


def test_kl_latent_has_finite_kl_and_is_deterministic_in_eval():
    model = OccupancyVAE(small_config(latent_type="kl"))
    voxels = random_voxels()
    model.train()
    sampled = model(voxels)
    assert torch.isfinite(sampled.kl_loss) and sampled.kl_loss > 0
    model.eval()
    with torch.no_grad():
        first, second = model(voxels), model(voxels)
        mean = model.encode(voxels)
    assert torch.equal(first.logits, second.logits)  # eval decodes the mean, no sampling
    assert torch.equal(first.latent, mean)
    assert not torch.allclose(sampled.logits, first.logits)  # training decodes a sample


def test_kl_encode_is_batch_invariant_and_float64_accurate_on_a_structured_scene():
    # Mostly free space over a ground plane with one box, like real labels: near-constant feature maps are where a
    # channels-last GroupNorm on CPU loses digits. Cached latents (encoded in other batches) rely on this.
    config = small_config(grid_shape=(64, 64, 8), latent_type="kl", block_channels=(8, 8), norm_num_groups=2)
    model = OccupancyVAE(config).eval()
    voxels = torch.full((3, 64, 64, 8), 17, dtype=torch.uint8)
    voxels[..., 0] = 11
    for index in range(3):
        voxels[index, 10 + 5 * index : 20 + 5 * index, 30:40, 1:3] = 4
    with torch.no_grad():
        batched = model.encode(voxels)
        one_by_one = torch.cat([model.encode(voxels[i : i + 1]) for i in range(3)])
        reference = OccupancyVAE(config).eval().double()
        reference.load_state_dict(model.state_dict())
        exact = reference.encode(voxels)
    torch.testing.assert_close(batched.double(), exact, rtol=0, atol=1e-5)
    torch.testing.assert_close(one_by_one, batched, rtol=1e-6, atol=1e-6)


def test_ema_codebook_changes_in_training_but_not_in_eval():
    model = OccupancyVAE(small_config(vq_update="ema"))
    quantizer = model.quantizer
    assert not quantizer.codebook.requires_grad
    voxels = random_voxels()
    before = {name: tensor.clone() for name, tensor in quantizer.state_dict().items()}
    model.eval()
    with torch.no_grad():
        model(voxels)
    for name, tensor in quantizer.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    model.train()
    with torch.no_grad():
        model(voxels)
    assert not torch.equal(quantizer.codebook, before["codebook"])
    assert not torch.equal(quantizer.usage, before["usage"])


def test_straight_through_codebook_gets_gradients_and_a_codebook_loss():
    model = OccupancyVAE(small_config(vq_update="straight_through", dead_code_threshold=0.0)).train()
    output = model(random_voxels())
    output.loss.backward()
    assert output.codebook_loss is not None and output.codebook_loss > 0
    assert model.quantizer.codebook.grad is not None and model.quantizer.codebook.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # straight-through reaches the encoder


@pytest.mark.parametrize("vq_update", ["ema", "straight_through"])
def test_dead_codes_restart_to_encoder_outputs_of_the_batch(vq_update):
    model = OccupancyVAE(small_config(vq_update=vq_update, dead_code_threshold=1.0)).train()
    quantizer = model.quantizer
    dead = torch.arange(4)
    with torch.no_grad():
        quantizer.usage.fill_(1e6)
        quantizer.usage[dead] = 0.0
        voxels = random_voxels()
        features = model.encoder(voxels.long())
        encoder_outputs = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        model(voxels)
    largest_difference = (quantizer.codebook[dead][:, None, :] - encoder_outputs[None]).abs().amax(dim=2)
    assert torch.all(largest_difference.min(dim=1).values < 1e-6)  # each restarted code is one encoder output
    assert torch.all(quantizer.usage[dead] == 1.0)


def test_lovasz_softmax_matches_hand_computed_values():
    labels = torch.tensor([0, 0, 1])
    # Columns: classes 0, 1 and an absent class 2 (left out of the mean). Hand computation:
    # class 0: errors (0.1, 0.6, 0.3) sorted (0.6, 0.3, 0.1), Jaccard gradient (1/2, 1/6, 1/3) -> 23/60;
    # class 1: errors (0.1, 0.6, 0.3) sorted (0.6, 0.3, 0.1), Jaccard gradient (1/2, 1/2, 0) -> 27/60; mean 5/12.
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.3, 0.7, 0.0]])
    torch.testing.assert_close(lovasz_softmax_loss(probs, labels), torch.tensor(5 / 12))
    uniform = torch.full((2, 2), 0.5)
    torch.testing.assert_close(lovasz_softmax_loss(uniform, torch.tensor([0, 1])), torch.tensor(0.5))
    perfect = F.one_hot(labels, 3).float()
    torch.testing.assert_close(lovasz_softmax_loss(perfect, labels), torch.tensor(0.0))


def test_cross_entropy_with_class_weights_is_torch_weighted_mean():
    weights = [float(i + 1) for i in range(NUM_OCC_CLASSES)]
    model = OccupancyVAE(small_config(class_weights=weights, lovasz_weight=0.0))
    voxels = random_voxels()
    logits = torch.randn(2, NUM_OCC_CLASSES, *SMALL_GRID)
    ce_loss, lovasz = model.reconstruction_loss(logits, voxels)
    expected = F.cross_entropy(logits, voxels.long(), weight=torch.tensor(weights))
    torch.testing.assert_close(ce_loss, expected)
    assert lovasz is None


def test_camera_mask_weighting_scales_voxels_outside_the_mask():
    voxels = random_voxels()
    mask = torch.zeros(2, *SMALL_GRID, dtype=torch.bool)
    mask[:, :8] = True
    changed = voxels.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % NUM_OCC_CLASSES  # labels differ only outside the camera mask
    logits = torch.randn(2, NUM_OCC_CLASSES, *SMALL_GRID)

    ignoring = OccupancyVAE(small_config(camera_mask_weighting=True, outside_camera_weight=0.0))
    torch.testing.assert_close(
        ignoring.reconstruction_loss(logits, voxels, mask), ignoring.reconstruction_loss(logits, changed, mask)
    )
    unmasked = OccupancyVAE(small_config(camera_mask_weighting=False))
    assert not torch.allclose(
        unmasked.reconstruction_loss(logits, voxels, mask)[0], unmasked.reconstruction_loss(logits, changed, mask)[0]
    )
    half = OccupancyVAE(small_config(camera_mask_weighting=True, outside_camera_weight=0.5))
    per_voxel = F.cross_entropy(logits, voxels.long(), reduction="none")
    voxel_weight = torch.where(mask, 1.0, 0.5)
    torch.testing.assert_close(
        half.reconstruction_loss(logits, voxels, mask)[0], (per_voxel * voxel_weight).sum() / voxel_weight.sum()
    )


def test_frozen_decoder_passes_gradients_to_a_predicted_latent_only():
    model = OccupancyVAE(small_config()).requires_grad_(False).eval()
    voxels = random_voxels()
    predicted = torch.randn(2, 4, 8, 8, requires_grad=True)
    ce_loss, lovasz = model.reconstruction_loss(model.decode(predicted), voxels)
    (ce_loss + lovasz).backward()
    assert predicted.grad is not None and predicted.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in model.parameters())


@pytest.mark.parametrize(
    ("bad_input", "message"),
    [
        (torch.zeros(2, *SMALL_GRID), "voxels: expected an integer tensor"),
        (
            torch.zeros(2, 16, 16, 5, dtype=torch.uint8),
            r"voxels: expected an integer tensor of shape \(batch, 16, 16, 4\)",
        ),
        (torch.full((1, *SMALL_GRID), NUM_OCC_CLASSES, dtype=torch.uint8), r"class ids must lie in \[0, 18\)"),
    ],
)
def test_encode_rejects_bad_voxels(bad_input, message):
    model = OccupancyVAE(small_config())
    with pytest.raises(ValueError, match=message):
        model.encode(bad_input)


def test_decode_rejects_a_wrong_latent_and_kl_has_no_indices():
    with pytest.raises(ValueError, match=r"latent: expected \(batch, 4, 8, 8\)"):
        OccupancyVAE(small_config()).decode(torch.zeros(1, 4, 9, 8))
    with pytest.raises(ValueError, match="encode_indices: only available with latent_type='vq'"):
        OccupancyVAE(small_config(latent_type="kl")).encode_indices(random_voxels())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"latent_type": "gaussian"}, "latent_type"),
        ({"vq_update": "kmeans"}, "vq_update"),
        ({"grid_shape": (17, 16, 4)}, "grid_shape"),
        ({"norm_num_groups": 3}, "norm_num_groups"),
        ({"class_weights": [1.0, 2.0]}, "class_weights"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"outside_camera_weight": 2.0}, "outside_camera_weight"),
        ({"free_class": 18}, "free_class"),
        ({"kl_weight": -1.0}, "kl_weight"),
    ],
)
def test_config_rejects_invalid_values_naming_the_field(overrides, field):
    with pytest.raises(StrictDataclassClassValidationError, match=f"ValueError: {field}"):
        small_config(**overrides)


@pytest.mark.parametrize("latent_type", ["vq", "kl"])
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path, latent_type):
    model = OccupancyVAE(small_config(latent_type=latent_type, class_weights=[1.0] * NUM_OCC_CLASSES))
    model.train()
    with torch.no_grad():
        model(random_voxels(seed=1))  # moves the VQ statistics away from their initial values
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = OccupancyVAE.from_pretrained(tmp_path).eval()
    assert loaded.config.to_diff_dict() == model.config.to_diff_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    voxels = random_voxels(seed=2)
    with torch.no_grad():
        expected, actual = model(voxels), loaded(voxels)
    assert torch.equal(actual.logits, expected.logits)
    assert torch.equal(actual.latent, expected.latent)
    assert torch.equal(actual.loss, expected.loss)


def test_auto_classes_resolve_the_occupancy_vae(tmp_path):
    config = AutoConfig.for_model(
        "occvla_occupancy_vae", grid_shape=SMALL_GRID, block_channels=(8, 16), norm_num_groups=4
    )
    assert isinstance(config, OccupancyVAEConfig)
    assert isinstance(AutoModel.from_config(config), OccupancyVAE)
    OccupancyVAE(small_config()).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), OccupancyVAEConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), OccupancyVAE)
