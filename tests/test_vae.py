"""SmallVAE: the checks diffusers runs on its own models, plus latent shapes, bad input and AutoencoderKL parity."""

import copy
import json
import os

import numpy as np
import pytest
import torch
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.training_utils import EMAModel

from sdscratch.models.vae import SmallVAE

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16)


def tiny_vae(**overrides) -> SmallVAE:
    torch.manual_seed(0)
    return SmallVAE(**{**TINY, **overrides}).eval()


def images(batch: int = 2, size: int = 16, channels: int = 3, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1  # (B, C, H, W) in [-1, 1]


@torch.no_grad()
def reconstruct(model: SmallVAE, x: torch.Tensor) -> torch.Tensor:
    return model(x).sample


def test_default_config_is_64px_to_16x16x4():
    model = SmallVAE()
    assert model.downsample_factor == 4 and model.latent_size == 16
    with torch.no_grad():
        mean = model.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert mean.shape == (1, 4, 16, 16)


@pytest.mark.parametrize("block_out_channels, factor", [((8, 8), 2), ((8, 8, 16), 4), ((8, 8, 16, 16), 8)])
def test_latent_shape_follows_config(block_out_channels, factor):
    model = tiny_vae(block_out_channels=block_out_channels, latent_channels=3)
    assert model.downsample_factor == factor
    assert model.latent_size == 16 // factor
    with torch.no_grad():
        posterior = model.encode(images(size=16)).latent_dist
        assert posterior.mean.shape == (2, 3, 16 // factor, 16 // factor)
        # non-square input works too
        out = model(torch.zeros(1, 3, 16, 2 * factor)).sample
    assert out.shape == (1, 3, 16, 2 * factor)


def test_save_load_round_trip_safetensors(tmp_path):
    model, x = tiny_vae(), images()
    model.save_pretrained(tmp_path)
    files = os.listdir(tmp_path)
    assert "diffusion_pytorch_model.safetensors" in files
    assert not any(name.endswith(".bin") for name in files)
    loaded = SmallVAE.from_pretrained(tmp_path).eval()
    assert list(loaded.config.block_out_channels) == list(model.config.block_out_channels)
    assert torch.equal(reconstruct(model, x), reconstruct(loaded, x))


def test_fp16_variant_and_torch_dtype(tmp_path):
    model = tiny_vae()
    model.to(torch.float16).save_pretrained(tmp_path, variant="fp16")
    assert "diffusion_pytorch_model.fp16.safetensors" in os.listdir(tmp_path)
    fp16 = SmallVAE.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float16)
    assert fp16.dtype == torch.float16
    for p_saved, p_loaded in zip(model.parameters(), fp16.parameters()):
        assert torch.equal(p_saved, p_loaded)
    # fp16 is a storage format on CPU: upcast to compute (fp16 matmuls have no fast path here)
    fp32 = SmallVAE.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float32).eval()
    assert fp32.dtype == torch.float32
    assert reconstruct(fp32, images()).isfinite().all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_dtype_load(tmp_path, dtype):
    tiny_vae().save_pretrained(tmp_path)
    loaded = SmallVAE.from_pretrained(tmp_path, torch_dtype=dtype)
    assert loaded.dtype == dtype
    assert all(p.dtype == dtype for p in loaded.parameters())


def test_determinism():
    x = images()
    assert torch.equal(reconstruct(tiny_vae(), x), reconstruct(tiny_vae(), x))
    model = tiny_vae()
    with torch.no_grad():
        posterior = model.encode(x).latent_dist
        first = posterior.sample(torch.Generator().manual_seed(3))
        second = posterior.sample(torch.Generator().manual_seed(3))
        out_a = model(x, sample_posterior=True, generator=torch.Generator().manual_seed(4)).sample
        out_b = model(x, sample_posterior=True, generator=torch.Generator().manual_seed(4)).sample
    assert torch.equal(first, second) and torch.equal(out_a, out_b)


def test_return_dict_equivalence():
    model, x = tiny_vae(), images()
    with torch.no_grad():
        encoded = model.encode(x)
        (posterior,) = model.encode(x, return_dict=False)
        assert isinstance(encoded, AutoencoderKLOutput) and isinstance(posterior, DiagonalGaussianDistribution)
        assert torch.equal(encoded.latent_dist.parameters, posterior.parameters)
        z = posterior.mode()
        decoded = model.decode(z)
        assert isinstance(decoded, DecoderOutput)
        assert torch.equal(decoded.sample, model.decode(z, return_dict=False)[0])
        assert torch.equal(model(x).sample, model(x, return_dict=False)[0])


def _grads(model: SmallVAE, x: torch.Tensor) -> dict:
    model.zero_grad()
    model(x).sample.square().mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_gradient_checkpointing_same_gradients():
    x = images()
    model = tiny_vae().train()
    reference = _grads(model, x)
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    assert model.encoder.gradient_checkpointing and model.decoder.gradient_checkpointing
    checkpointed = _grads(model, x)
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing


def test_overfitting_one_batch_decreases_loss():
    model, x = tiny_vae().train(), images(batch=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        posterior = model.encode(x).latent_dist
        reconstruction = model.decode(posterior.sample(torch.Generator().manual_seed(0))).sample
        loss = torch.nn.functional.mse_loss(reconstruction, x) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_extra_config_keys_from_ema_are_tolerated(tmp_path):
    model = tiny_vae()
    ema = EMAModel(model.parameters(), model_cls=SmallVAE, model_config=model.config)
    ema.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "decay" in config and "optimization_step" in config
    loaded = SmallVAE.from_pretrained(tmp_path).eval()
    x = images()
    assert torch.equal(reconstruct(model, x), reconstruct(loaded, x))
    reloaded_ema = EMAModel.from_pretrained(tmp_path, model_cls=SmallVAE)
    assert reloaded_ema.decay == ema.decay
    # and through from_config with arbitrary unknown keys
    assert SmallVAE.from_config({**dict(model.config), "decay": 0.999, "foo": 1}).config.sample_size == 16


def test_from_config_round_trip():
    model = tiny_vae(latent_channels=3, scaling_factor=0.5, mid_block_add_attention=False)
    clone = SmallVAE.from_config(model.config)
    assert dict(clone.config) == dict(model.config)
    assert clone.encoder.mid_block.attention is None
    clone.load_state_dict(model.state_dict())
    x = images()
    assert torch.equal(reconstruct(model.eval(), x), reconstruct(clone.eval(), x))


def test_slicing_matches_unsliced():
    model, x = tiny_vae(), images(batch=3)
    with torch.no_grad():
        mean, full = model.encode(x).latent_dist.mean, model(x).sample
        model.enable_slicing()
        assert model.use_slicing
        torch.testing.assert_close(model.encode(x).latent_dist.mean, mean)
        torch.testing.assert_close(model(x).sample, full)
        model.disable_slicing()
    assert not model.use_slicing


def test_bf16_autocast_and_channels_last_close_to_fp32():
    model, x = tiny_vae(), images()
    reference = reconstruct(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = reconstruct(model, x)
    assert out.isfinite().all()
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)
    model = model.to(memory_format=torch.channels_last)
    out = reconstruct(model, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_bf16_weights_inference_close_to_fp32():
    """The pipeline's fast path: weights cast once to bf16 (no autocast), encode + decode close to fp32."""
    model, x = tiny_vae(), images()
    reference = reconstruct(model, x)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    out = reconstruct(bf16, x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.isfinite().all()
    assert ((out.float() - reference).norm() / reference.norm()).item() < 0.05


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m: m.encode(torch.zeros(1, 4, 16, 16)), ValueError, ["`x`", "4 channels", "in_channels"]),
        (lambda m: m.encode(torch.zeros(1, 3, 17, 16)), ValueError, ["`x`", "17x16", "divisible", "2"]),
        (lambda m: m.encode(torch.zeros(3, 16, 16)), ValueError, ["`x`", "(3, 16, 16)"]),
        (lambda m: m.encode([[0.0]]), TypeError, ["`x`", "list"]),
        (lambda m: m.decode(torch.zeros(1, 3, 8, 8)), ValueError, ["`z`", "3 channels", "latent_channels", "4"]),
        (lambda m: m.decode(None), TypeError, ["`z`", "NoneType"]),
        (lambda m: m(torch.zeros(1, 1, 16, 16)), ValueError, ["`sample`", "1 channels", "3"]),
        (lambda m: m(torch.zeros(1, 3, 15, 15)), ValueError, ["`sample`", "15x15", "divisible"]),
    ],
)
def test_bad_input_raises(call, error, words):
    with pytest.raises(error) as info:
        call(tiny_vae())
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"sample_size": 17}, "sample_size"),
        ({"sample_size": (16, 16)}, "sample_size"),
        ({"scaling_factor": 0.0}, "scaling_factor"),
        ({"scaling_factor": None}, "scaling_factor"),
        ({"layers_per_block": 0}, "layers_per_block"),
        ({"norm_num_groups": 0}, "norm_num_groups"),
        ({"block_out_channels": (8, 10)}, "norm_num_groups`=4 .* 10 channels"),
        ({"block_out_channels": (8, 0)}, "block_out_channels"),
        ({"block_out_channels": 8}, "block_out_channels"),
        ({"block_out_channels": (8, 16), "norm_num_groups": 3}, "norm_num_groups`=3 .* 8 channels"),
        ({"scaling_factor": float("inf")}, "scaling_factor"),
        ({"scaling_factor": float("nan")}, "scaling_factor"),
        ({"scaling_factor": np.float32(0.2)}, r"a Python int or float.*got np.float32\(0.2\)"),  # said "positive"
        ({"in_channels": 0}, "`in_channels` must be a positive int"),
        ({"out_channels": 3.0}, "`out_channels` must be a positive int"),
        ({"latent_channels": "4"}, "`latent_channels` must be a positive int"),
        ({"force_upcast": "false"}, "`force_upcast` must be True or False"),  # was read as True
        ({"mid_block_add_attention": "false"}, "`mid_block_add_attention` must be True or False"),
    ],
)
def test_bad_config_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SmallVAE(**{**TINY, **kwargs})


def test_plugs_in_where_autoencoder_kl_does():
    """The attributes and calls a diffusers pipeline / training script uses on `AutoencoderKL`."""
    model, x = tiny_vae(), images()
    assert model.config.scaling_factor == 1.0
    model.register_to_config(scaling_factor=0.25)  # what train_vae.py does after measuring std(latents)
    assert model.config.scaling_factor == 0.25
    # pipelines derive the factor from block_out_channels exactly like this
    assert 2 ** (len(model.config.block_out_channels) - 1) == model.downsample_factor
    with torch.no_grad():
        posterior = model.encode(x).latent_dist
        latents = posterior.sample(generator=torch.Generator().manual_seed(0)) * model.config.scaling_factor
        assert latents.shape == (2, model.config.latent_channels, model.latent_size, model.latent_size)
        assert torch.equal(posterior.mode(), posterior.mean)
        assert posterior.kl().shape == (2,)
        image = model.decode(latents / model.config.scaling_factor, return_dict=False)[0]
    assert image.shape == x.shape
    assert model.config.force_upcast is False and model.dtype == torch.float32


def test_enable_tiling_raises_even_after_disable_tiling():
    """SmallVAE has no tiled encode / decode. diffusers' `AutoencoderMixin.enable_tiling` raises only while the model
    has no `use_tiling` attribute, and `disable_tiling()` creates it: `disable_tiling(); enable_tiling()` then
    set a flag nothing reads, silently. It raises every time now; `use_tiling` stays False, as AutoencoderKL's
    attribute reads when off."""
    model = tiny_vae()
    assert model.use_tiling is False
    model.disable_tiling()
    for _ in range(2):
        with pytest.raises(NotImplementedError, match="enable_tiling"):
            model.enable_tiling()
        assert model.use_tiling is False


def _as_autoencoder_kl(model: SmallVAE):
    """diffusers' AutoencoderKL of the same config holding `model`'s weights. Its encoder pads before a stride-2
    convolution asymmetrically (`padding=0` + `F.pad(0, 1, 0, 1)`); SmallVAE's pads 1 on each side, as UNets'
    Downsample2D(padding=1): the reference's downsamplers are set to that, the rest is diffusers' code."""
    from diffusers import AutoencoderKL

    config = model.config
    levels = len(config.block_out_channels)
    reference = AutoencoderKL(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size,
        mid_block_add_attention=config.mid_block_add_attention,
    ).eval()
    for block in reference.encoder.down_blocks:
        for downsampler in block.downsamplers or ():
            downsampler.padding = downsampler.conv.padding = 1
    state = {}
    for key, value in model.state_dict().items():
        resampler = "downsamplers.0.conv" if key.startswith("encoder.") else "upsamplers.0.conv"
        key = key.replace("resampler.conv", resampler)
        key = key.replace("mid_block.resnet_1.", "mid_block.resnets.0.").replace(
            "mid_block.resnet_2.", "mid_block.resnets.1."
        )
        key = key.replace("mid_block.attention.", "mid_block.attentions.0.").replace(".to_out.", ".to_out.0.")
        if ".to_qkv." in key:
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3)):
                state[key.replace("to_qkv", name)] = part
        else:
            state[key] = value
    reference.load_state_dict(state)
    return reference.double() if model.dtype == torch.float64 else reference  # (`.to` logs a float32 warning)


@pytest.mark.parametrize("overrides", [{}, {"layers_per_block": 2, "mid_block_add_attention": False}])
@torch.no_grad()
def test_matches_autoencoder_kl(overrides, randomize):
    """Encoder (GroupNorm -> SiLU -> conv_out), mid-block self-attention (GroupNorm, q / k / v, residual), decoder
    (one resnet more per level, nearest-neighbour Upsample), quant / post-quant convs and the posterior (mean and
    logvar halves, `sample_posterior` with a generator) as diffusers' AutoencoderKL computes them. In float64: the
    two attention implementations round float32 differently (decoder outputs 9e-6 apart, the default tolerance is
    1e-5), so a float32 comparison would fail on CPUs whose kernels round a little more; float64 keeps small
    mutants (a GroupNorm eps of 1e-5 moves the latents' mean by 6e-5) far above its rounding."""
    model = randomize(tiny_vae(**overrides)).double()
    reference = _as_autoencoder_kl(model)
    x = images().double()
    posterior, expected = model.encode(x).latent_dist, reference.encode(x).latent_dist
    torch.testing.assert_close(posterior.mean, expected.mean)
    torch.testing.assert_close(posterior.logvar, expected.logvar)
    torch.testing.assert_close(model.decode(posterior.mean).sample, reference.decode(expected.mean).sample)
    for sample_posterior in (False, True):
        out, ref = (
            m(x, sample_posterior=sample_posterior, generator=torch.Generator().manual_seed(5)).sample
            for m in (model, reference)
        )
        torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, model(x).sample)  # sampled, not the mode


def test_gradient_checkpointing_is_applied():
    """`enable_gradient_checkpointing` must really checkpoint (equal gradients alone cannot tell): diffusers' hook for
    a custom checkpointing function sees every encoder and decoder stage, in training only."""
    from torch.utils.checkpoint import checkpoint

    calls = []

    def checkpointing(module, *args):
        calls.append(type(module).__name__)
        return checkpoint(module.__call__, *args, use_reentrant=False)

    model, x = tiny_vae().train(), images()
    model.enable_gradient_checkpointing(checkpointing)
    reconstruct(model, x)
    assert calls == []  # no gradients: nothing to save memory for
    model(x).sample.mean().backward()
    assert calls == ["ResnetStage", "ResnetStage", "MidBlock"] + ["MidBlock", "ResnetStage", "ResnetStage"]
