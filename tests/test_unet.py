"""SmallUNet: the checks diffusers runs on its own models, plus call-compatibility with every scheduler."""

import copy

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from sdscratch import SmallUNet
from sdscratch.models.unet_blocks import Attention, TimestepEmbedding, math_attention

TINY = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 32),
    layers_per_block=1,
    transformer_levels=(False, True),
    cross_attention_dim=24,
    attention_head_dim=16,  # 32 channels -> 2 heads of 16
    norm_num_groups=8,
)
BATCH, SEQ = 2, 5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second thread only adds synchronisation (and the CPU is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_unet(**overrides) -> SmallUNet:
    torch.manual_seed(0)
    return SmallUNet(**{**TINY, **overrides}).eval()


def make_inputs(batch=BATCH, size=8, seed=1):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, size, size, generator=generator)
    text = torch.randn(batch, SEQ, 24, generator=generator)
    timestep = torch.tensor([10, 500][:batch] + [999] * max(0, batch - 2))
    return sample, timestep, text


def public_config(model) -> dict:
    """Config without the bookkeeping keys, tuples as lists (as JSON stores them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items() if not k.startswith("_")}


@torch.no_grad()
def run(unet, sample, timestep, text=None, **kwargs):
    return unet(sample, timestep, text, **kwargs).sample


def test_forward_shape_and_dict_vs_tuple():
    unet = make_unet()
    sample, t, text = make_inputs()
    with torch.no_grad():
        out = unet(sample, t, text)
        tup = unet(sample, t, text, return_dict=False)
    assert isinstance(out, UNet2DConditionOutput) and isinstance(tup, tuple)
    assert out.sample.shape == sample.shape and out.sample.is_contiguous()
    torch.testing.assert_close(out.sample, tup[0], rtol=0, atol=0)
    assert unet.time_cond_proj_dim is None and unet.config.time_cond_proj_dim is None  # pipelines read both
    class_names = {type(m).__name__ for m in make_unet(cross_attention_levels=(True, False)).modules()}
    assert set(SmallUNet._no_split_modules) <= class_names


def test_determinism():
    unet = make_unet()
    sample, t, text = make_inputs()
    torch.testing.assert_close(run(unet, sample, t, text), run(unet, sample, t, text), rtol=0, atol=0)


def test_save_load_round_trip(tmp_path):
    unet = make_unet()
    sample, t, text = make_inputs()
    unet.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = SmallUNet.from_pretrained(tmp_path).eval()
    assert public_config(loaded) == public_config(unet)
    torch.testing.assert_close(run(loaded, sample, t, text), run(unet, sample, t, text), rtol=0, atol=0)


def test_fourier_buffer_survives_round_trip(tmp_path):
    unet = make_unet(time_embedding_type="fourier")
    with torch.no_grad():  # other frequencies than a fresh model's: the checkpoint's own must be the ones loaded
        unet.time_embedding.fourier_weight.mul_(1.5)
    sample, _, text = make_inputs()
    unet.save_pretrained(tmp_path)
    loaded = SmallUNet.from_pretrained(tmp_path).eval()
    sigma = torch.tensor([0.5, 0.01])
    torch.testing.assert_close(run(loaded, sample, sigma, text), run(unet, sample, sigma, text), rtol=0, atol=0)


def test_variant_fp16_and_torch_dtype(tmp_path):
    unet = make_unet()
    sample, t, text = make_inputs()
    expected = run(unet, sample, t, text)
    copy.deepcopy(unet).to(torch.float16).save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "diffusion_pytorch_model.fp16.safetensors").exists()

    half = SmallUNet.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in half.parameters())
    # never compute in fp16 on CPU (no fast path): upcast, then compare with fp16 weight rounding tolerance
    upcast = half.float().eval()
    torch.testing.assert_close(run(upcast, sample, t, text), expected, rtol=2e-2, atol=2e-2)

    as_fp32 = SmallUNet.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float32).eval()
    assert all(p.dtype == torch.float32 for p in as_fp32.parameters())
    torch.testing.assert_close(run(as_fp32, sample, t, text), run(upcast, sample, t, text), rtol=0, atol=0)


def test_torch_dtype_bfloat16_load_runs_in_bf16(tmp_path):
    unet = make_unet()
    sample, t, text = make_inputs()
    unet.save_pretrained(tmp_path)
    bf16 = SmallUNet.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    assert bf16.dtype == torch.bfloat16
    out = run(bf16, sample.bfloat16(), t, text.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), run(unet, sample, t, text), rtol=0.1, atol=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_loading_info_with_torch_dtype(tmp_path, dtype):
    # as ModelMixin.from_pretrained: `(model, loading_info)`, the model in `torch_dtype`
    make_unet().save_pretrained(tmp_path)
    model, info = SmallUNet.from_pretrained(tmp_path, torch_dtype=dtype, output_loading_info=True)
    assert model.dtype == dtype and info["missing_keys"] == [] and info["unexpected_keys"] == []


def test_bf16_autocast_close_to_fp32():
    unet = make_unet()
    sample, t, text = make_inputs()
    expected = run(unet, sample, t, text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(unet, sample, t, text)
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("time_embedding_type", ["positional", "fourier"])
def test_bf16_weights_inference_close_to_fp32(time_embedding_type):
    """The shipped inference path: weights cast once (`unet.to(torch.bfloat16)`), no autocast."""
    unet = make_unet(time_embedding_type=time_embedding_type)
    sample, _, text = make_inputs()
    t = torch.tensor([999, 3]) if time_embedding_type == "positional" else torch.tensor([0.9, 0.02])
    expected = run(unet, sample, t, text)
    bf16 = copy.deepcopy(unet).to(torch.bfloat16)
    # the time-embedding frequencies stay float32: rounded to bf16, t * f would drift by radians at t = 999
    assert all(b.dtype == torch.float32 for b in bf16.time_embedding.buffers())
    out = run(bf16, sample.bfloat16(), t, text.bfloat16())
    assert out.dtype == torch.bfloat16
    assert ((out.float() - expected).norm() / expected.norm()).item() < 0.03
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_bf16_autocast_training_path_matches_fp32_gradients():
    """The bf16 training step uses `math_attention` instead of SDPA: outputs and gradients stay close."""
    unet = make_unet()
    sample, t, text = make_inputs()
    grads = []
    for autocast in (False, True):
        unet.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = unet(sample, t, text).sample.float().square().mean()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in unet.parameters()]))
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.99


def test_math_attention_matches_sdpa():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8, generator=generator) for _ in range(3))
    bias = torch.tensor([[0.0, 0, 0, -10000, 0, -10000], [0, 0, 0, 0, 0, 0]])[:, None, None, :]
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(math_attention(q, k, v, bias), expected, rtol=1e-5, atol=1e-5)
    attention = Attention(16, heads=2)
    x = torch.randn(2, 6, 16, generator=generator)
    torch.testing.assert_close(attention(x), attention(x), rtol=0, atol=0)


def test_float64_training_path_keeps_float64():
    """A float64 training step takes the math path (every dtype but float32 does): its softmax must not be
    rounded to float32, or gradcheck on a float64 model fails."""
    torch.manual_seed(0)
    attention = Attention(8, heads=2, context_dim=6).double()
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    context = torch.randn(1, 4, 6, dtype=torch.float64)
    bias = torch.tensor([0.0, 0.0, -10000.0, 0.0], dtype=torch.float64)[None, None, None, :]
    assert torch.autograd.gradcheck(lambda x: attention(x, context, bias), (x,))


def test_bf16_training_path_honours_the_mask():
    """Under bf16 autocast with gradients the attention runs as `math_attention`: masked tokens stay hidden
    (same output, no gradient), as in the fp32 / SDPA path."""
    unet = make_unet().train()
    sample, t, text = make_inputs()
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[:, 3:] = 0
    outputs = []
    for context in (text, torch.cat([text[:, :3], torch.randn(BATCH, SEQ - 3, 24)], dim=1)):
        context = context.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = unet(sample, t, context, encoder_attention_mask=mask).sample
        out.float().square().mean().backward()
        assert context.grad[:, 3:].abs().max() == 0 and context.grad[:, :3].abs().max() > 0
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_bf16_weights_keep_timestep_precision():
    """The output tolerances above cannot tell t = 999 from t = 1000 (its bf16 rounding) in a tiny random UNet:
    check the time features the bf16 model's MLP reads instead (float32 timesteps and frequencies, then a cast)."""
    unet = make_unet()
    bf16 = copy.deepcopy(unet).to(torch.bfloat16)
    sample, _, text = make_inputs()
    t = torch.tensor([999, 3])
    features = {}
    for name, model, inputs in (("fp32", unet, (sample, text)), ("bf16", bf16, (sample.bfloat16(), text.bfloat16()))):
        hook = model.time_embedding.linear_1.register_forward_hook(
            lambda module, args, output, name=name: features.__setitem__(name, args[0].float())
        )
        run(model, inputs[0], t, inputs[1])
        hook.remove()
    torch.testing.assert_close(features["bf16"], features["fp32"], rtol=0, atol=4e-3)  # bf16 rounding of [-1, 1]


def test_channels_last_input_same_output():
    unet = make_unet()
    sample, t, text = make_inputs()
    channels_last = sample.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(run(unet, channels_last, t, text), run(unet, sample, t, text), rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_same_gradients():
    unet = make_unet().train()
    checkpointed = copy.deepcopy(unet)
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.is_gradient_checkpointing and not unet.is_gradient_checkpointing
    sample, t, text = make_inputs()
    for model in (unet, checkpointed):
        model(sample, t, text).sample.square().mean().backward()
    for (name, p), p_ckpt in zip(unet.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p_ckpt.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_overfit_one_batch_loss_decreases():
    unet = make_unet().train()
    sample, t, text = make_inputs()
    target = torch.randn_like(sample)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(unet(sample, t, text).sample, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_from_config_round_trip_and_unknown_keys(tmp_path):
    unet = make_unet()
    clone = SmallUNet.from_config(unet.config)
    assert public_config(clone) == public_config(unet)
    # EMAModel.save_pretrained writes its own state (decay, optimization_step, ...) into the model config
    from diffusers.training_utils import EMAModel

    ema = EMAModel(unet.parameters(), model_cls=SmallUNet, model_config=unet.config)
    ema.save_pretrained(tmp_path)
    loaded = SmallUNet.from_pretrained(tmp_path)
    assert {k: v for k, v in public_config(loaded).items() if k in unet.config} == public_config(unet)
    extra = SmallUNet.from_config({**dict(unet.config), "decay": 0.999, "some_future_key": 1})
    assert extra.config.sample_size == unet.config.sample_size


@pytest.mark.parametrize("skip_connection", ["concat", "add"])
@pytest.mark.parametrize("time_embedding_type", ["positional", "fourier"])
def test_variants_run_and_train(skip_connection, time_embedding_type):
    unet = make_unet(skip_connection=skip_connection, time_embedding_type=time_embedding_type).train()
    sample, _, text = make_inputs()
    timestep = torch.tensor([0.02, 1.0]) if time_embedding_type == "fourier" else torch.tensor([3, 900])
    out = unet(sample, timestep, text).sample
    out.square().mean().backward()
    assert out.shape == sample.shape and torch.isfinite(out).all()
    assert all(p.grad is not None for p in unet.parameters() if p.requires_grad)


def test_three_levels_and_unconditional():
    unet = make_unet(block_out_channels=(16, 16, 32), transformer_levels=(True, False, True), cross_attention_dim=None)
    sample = torch.randn(2, 4, 8, 8)
    assert unet.downsample_factor == 4
    assert run(unet, sample, 5).shape == sample.shape
    assert not any(name.endswith("attn2.to_kv.weight") for name, _ in unet.named_parameters())


def test_cross_attention_levels_read_the_text(tmp_path):
    """A level flagged in cross_attention_levels gets a light CrossAttentionBlock per resnet, which reads the text
    (the attention mask included), trains, and survives save/load."""
    from sdscratch.models.unet_blocks import CrossAttentionBlock

    unet = make_unet(cross_attention_levels=(True, False))
    level0 = [unet.down_blocks[0], unet.up_blocks[-1]]
    assert all(isinstance(block, CrossAttentionBlock) for level in level0 for block in level.attentions)
    assert [len(level.attentions) for level in level0] == [1, 2]  # layers_per_block, layers_per_block + 1
    sample, t, text = make_inputs()
    # the text reaches the output through the new blocks alone: zeroing their output projection changes it
    with_blocks = run(unet, sample, t, text)
    without = copy.deepcopy(unet)
    for level in (without.down_blocks[0], without.up_blocks[-1]):
        for block in level.attentions:
            torch.nn.init.zeros_(block.attn.to_out.weight)
            torch.nn.init.zeros_(block.attn.to_out.bias)
    assert not torch.allclose(run(without, sample, t, text), with_blocks)
    # masked tokens stay hidden from them too
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[:, 3:] = 0
    changed = text.clone()
    changed[:, 3:] = torch.randn(BATCH, SEQ - 3, 24)
    torch.testing.assert_close(
        run(unet, sample, t, changed, encoder_attention_mask=mask),
        run(unet, sample, t, text, encoder_attention_mask=mask),
    )
    # trains: every parameter gets a gradient, in fp32 and under bf16 autocast (math attention)
    unet.train()
    for autocast in (False, True):
        unet.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            unet(sample, t, text).sample.float().square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in unet.parameters())
    unet.eval()
    unet.save_pretrained(tmp_path)
    loaded = SmallUNet.from_pretrained(tmp_path).eval()
    assert list(loaded.config.cross_attention_levels) == [True, False]
    torch.testing.assert_close(run(loaded, sample, t, text), with_blocks)


def test_timestep_forms_agree():
    unet = make_unet()
    sample, _, text = make_inputs()
    expected = run(unet, sample, torch.tensor([7, 7]), text)
    for timestep in (7, 7.0, torch.tensor(7), torch.tensor([7]), torch.tensor(7.0), torch.tensor([7.0, 7.0])):
        torch.testing.assert_close(run(unet, sample, timestep, text), expected, rtol=0, atol=0)


def test_attention_mask_hides_discarded_tokens():
    unet = make_unet()
    sample, t, text = make_inputs()
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[:, 3:] = 0
    changed = text.clone()
    changed[:, 3:] = torch.randn(BATCH, SEQ - 3, 24)
    masked = run(unet, sample, t, text, encoder_attention_mask=mask)
    torch.testing.assert_close(run(unet, sample, t, changed, encoder_attention_mask=mask), masked)
    assert not torch.allclose(run(unet, sample, t, changed), run(unet, sample, t, text))
    # an all-ones mask is the same as no mask
    full = torch.ones(BATCH, SEQ)
    torch.testing.assert_close(run(unet, sample, t, text, encoder_attention_mask=full), run(unet, sample, t, text))


BAD_INPUTS = {
    "channels": (lambda s, t, c: (torch.randn(2, 3, 8, 8), t, c, None), "in_channels=4"),
    "not_4d": (lambda s, t, c: (s[0], t, c, None), "(batch, channels, height, width)"),
    "spatial": (lambda s, t, c: (torch.randn(2, 4, 8, 7), t, c, None), "divisible by 2"),
    "text_width": (lambda s, t, c: (s, t, torch.randn(2, SEQ, 23), None), "(batch, seq_len, 24)"),
    "text_batch": (lambda s, t, c: (s, t, torch.randn(1, SEQ, 24), None), "batch size 1"),
    "missing_text": (lambda s, t, c: (s, t, None, None), "required"),
    "timestep_len": (lambda s, t, c: (s, torch.tensor([1, 2, 3]), c, None), "`timestep`"),
    "timestep_list_len": (lambda s, t, c: (s, [1, 2, 3], c, None), "a list of 3"),
    "mask_shape": (lambda s, t, c: (s, t, c, torch.ones(2, SEQ + 1)), "`encoder_attention_mask`"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_before_compute(case, monkeypatch):
    unet = make_unet()
    build, message = BAD_INPUTS[case]
    sample, t, text, mask = build(*make_inputs())
    # "before any computation": conv_in must never run
    monkeypatch.setattr(unet.conv_in, "forward", lambda *a: pytest.fail("computed before validating"))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        unet(sample, t, text, encoder_attention_mask=mask)


@pytest.mark.parametrize(
    "timestep, error, message",
    [
        (None, TypeError, "`timestep` must be a number, a tensor or a list of numbers, got NoneType"),
        ("500", TypeError, "got str"),
        (np.array([1, 2, 3]), ValueError, r"one value per sample \(2\), got shape \(3,\)"),
    ],
)
def test_bad_timestep_raises_before_compute(timestep, error, message, monkeypatch):
    unet = make_unet()
    sample, _, text = make_inputs()
    monkeypatch.setattr(unet.conv_in, "forward", lambda *a: pytest.fail("computed before validating"))
    with pytest.raises(error, match=message):
        unet(sample, timestep, text)


@pytest.mark.parametrize("cross_attention_dim", [24, None])
@pytest.mark.parametrize("argument", ["encoder_hidden_states", "encoder_attention_mask"])
def test_non_tensor_text_inputs_raise_type_error_naming_the_argument(argument, cross_attention_dim, monkeypatch):
    # a list or NumPy array raised AttributeError ('list' object has no attribute 'ndim') or torch's
    # "linear(): argument 'input' must be Tensor", naming neither argument
    unet = make_unet(cross_attention_dim=cross_attention_dim)
    sample, t, text = make_inputs()
    inputs = {"encoder_hidden_states": text if cross_attention_dim else None, "encoder_attention_mask": None}
    inputs[argument] = np.ones((BATCH, SEQ, 24) if argument == "encoder_hidden_states" else (BATCH, SEQ)).tolist()
    monkeypatch.setattr(unet.conv_in, "forward", lambda *a: pytest.fail("computed before validating"))
    with pytest.raises(TypeError, match=f"`{argument}` must be a torch.Tensor or None, got list"):
        unet(sample, t, **inputs)
    inputs[argument] = np.asarray(inputs[argument])
    with pytest.raises(TypeError, match=f"`{argument}` must be a torch.Tensor or None, got ndarray"):
        unet(sample, t, **inputs)


def test_text_to_unconditional_unet_raises():
    unet = make_unet(cross_attention_dim=None)
    sample, t, text = make_inputs()
    with pytest.raises(ValueError, match="unconditional"):
        unet(sample, t, text)
    with pytest.raises(ValueError, match="unconditional"):
        unet(sample, t, encoder_attention_mask=torch.ones(2, SEQ))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(transformer_levels=(True,)), "transformer_levels"),
        (dict(transformer_levels=True), "transformer_levels"),
        (dict(cross_attention_levels=True), "cross_attention_levels"),
        (dict(block_out_channels=64, transformer_levels=(True,)), "block_out_channels"),
        (dict(skip_connection="mul"), "skip_connection"),
        (dict(time_embedding_type="learned"), "time_embedding_type"),
        (dict(block_out_channels=(16, 48), attention_head_dim=32), "attention_head_dim"),
        (dict(time_cond_proj_dim=8), "time_cond_proj_dim"),
        (dict(cross_attention_levels=(True,)), "cross_attention_levels"),
        (dict(cross_attention_levels=(False, True)), "already carry a transformer"),
        (dict(cross_attention_levels=(True, False), cross_attention_dim=None), "cross_attention_dim"),
        (dict(block_out_channels=(20, 32)), "norm_num_groups`=8 .* 20 channels"),  # diffusers raises too
        (dict(block_out_channels=(48, 96), norm_num_groups=32), "norm_num_groups`=32 .* 48 channels"),
        (dict(norm_num_groups=0), "norm_num_groups"),
        (dict(block_out_channels=(), transformer_levels=()), "block_out_channels"),
        (dict(attention_head_dim=0), "attention_head_dim"),
        (dict(attention_head_dim=(16,)), "one positive int per level"),
        (dict(layers_per_block=0), "layers_per_block"),
        (dict(layers_per_block=(1, 2, 1)), "layers_per_block"),
        # each key named, where torch failed with an unrelated message or a wrong value was used silently
        (dict(in_channels=0), "`in_channels` must be a positive int"),
        (dict(out_channels=None), "`out_channels` must be a positive int"),
        (dict(sample_size="16"), "`sample_size` must be a positive int"),
        (dict(cross_attention_dim="24"), "`cross_attention_dim` must be a positive int or None"),
        (dict(cross_attention_dim=24.0), "`cross_attention_dim` must be a positive int or None"),
        (dict(dropout="0.1"), "`dropout` must be a probability"),
        (dict(dropout=1.5), "`dropout` must be a probability"),
        (dict(flip_sin_to_cos="false"), "`flip_sin_to_cos` must be True or False"),  # was read as True
        (dict(freq_shift=None), "`freq_shift` must be a number below"),
        (dict(freq_shift=8), "`freq_shift` must be a number below block_out_channels\\[0\\] // 2 = 8"),  # NaN output
        (dict(transformer_levels=("false", "true")), "`transformer_levels` must hold True or False"),  # both on
        (dict(cross_attention_levels=("yes", False)), "`cross_attention_levels` must hold True or False"),
        (dict(block_out_channels=(16, True)), "block_out_channels"),
    ],
)
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SmallUNet(**{**TINY, **kwargs})


def test_per_level_layers_and_head_dims_as_diffusers():
    """`layers_per_block` and `attention_head_dim` take one value per level, as UNet2DConditionModel's do."""
    unet = make_unet(layers_per_block=(1, 2), attention_head_dim=(16, 8))
    assert [len(block.resnets) for block in unet.down_blocks] == [1, 2]
    assert [len(block.resnets) for block in unet.up_blocks] == [3, 2]  # level 1 first, one more each
    assert unet.down_blocks[1].attentions[0].attn1.heads == 4  # 32 channels / 8
    assert unet.mid_block.attention.attn1.heads == 4  # the last level's head width, as diffusers
    sample, t, text = make_inputs()
    assert run(unet, sample, t, text).shape == sample.shape
    # the same numbers for every level give the int config's model
    same, plain = make_unet(layers_per_block=(1, 1), attention_head_dim=(16, 16)), make_unet()
    torch.testing.assert_close(run(same, sample, t, text), run(plain, sample, t, text), rtol=0, atol=0)


def test_unet2dcondition_keyword_arguments():
    """diffusers pipelines call `unet(sample, t, encoder_hidden_states=..., timestep_cond=None,
    cross_attention_kwargs=None, added_cond_kwargs=None, return_dict=False)`: None (or empty dicts) are
    accepted, anything SmallUNet cannot use raises naming the argument, before any computation."""
    unet = make_unet()
    sample, t, text = make_inputs()
    none_given = unet(
        sample,
        t,
        encoder_hidden_states=text,
        class_labels=None,
        timestep_cond=None,
        attention_mask=None,
        cross_attention_kwargs={},
        added_cond_kwargs={},
        down_block_additional_residuals=None,
        mid_block_additional_residual=None,
        down_intrablock_additional_residuals=None,
        encoder_attention_mask=None,
        return_dict=False,
    )[0]
    torch.testing.assert_close(none_given, unet(sample, t, text).sample, rtol=0, atol=0)
    for name, value in [
        ("class_labels", torch.tensor([0, 1])),
        ("timestep_cond", torch.randn(2, 8)),
        ("attention_mask", torch.ones(2, SEQ)),
        ("cross_attention_kwargs", {"scale": 0.5}),
        ("added_cond_kwargs", {"image_embeds": torch.randn(2, 8)}),
        ("down_block_additional_residuals", (torch.randn(2, 16, 8, 8),)),
        ("mid_block_additional_residual", torch.randn(2, 32, 4, 4)),
        ("down_intrablock_additional_residuals", (torch.randn(2, 16, 8, 8),)),
    ]:
        with pytest.raises(ValueError, match=f"`{name}`"):
            unet(sample, t, text, **{name: value})


def test_fourier_frequencies_stay_float32_under_torch_dtype(tmp_path, monkeypatch):
    """from_pretrained(torch_dtype=bf16) keeps the Fourier frequencies in float32, as `.to(torch.bfloat16)` does:
    the bf16-loaded model gives the `.to(bf16)` model's output exactly."""
    from diffusers import ModelMixin

    unet = make_unet(time_embedding_type="fourier")
    unet.save_pretrained(tmp_path)
    with monkeypatch.context() as patch:  # diffusers' ModelMixin.to warns on every dtype cast: not while loading
        patch.setattr(ModelMixin, "to", lambda *args, **kwargs: pytest.fail("ModelMixin.to called"))
        loaded = SmallUNet.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    assert (
        SmallUNet.from_pretrained(tmp_path, dtype=torch.bfloat16).time_embedding.fourier_weight.dtype == torch.float32
    )
    weight = loaded.time_embedding.fourier_weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, unet.time_embedding.fourier_weight, rtol=0, atol=0)
    assert loaded.conv_in.weight.dtype == torch.bfloat16
    sample, _, text = make_inputs()
    sigma = torch.tensor([0.5, 0.01])
    cast = copy.deepcopy(unet).to(torch.bfloat16)
    torch.testing.assert_close(
        run(loaded, sample.bfloat16(), sigma, text.bfloat16()),
        run(cast, sample.bfloat16(), sigma, text.bfloat16()),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("time_embedding_type", ["positional", "fourier"])
def test_a_device_map_load_at_bf16_is_placed_at_bf16_sizes(tmp_path, time_embedding_type):
    # the float32 load (then cast) made accelerate plan the placement at float32 sizes: a bf16 model that fits in
    # max_memory was half offloaded to disk ("provide an offload_folder"), where diffusers' UNet loads whole
    unet = make_unet(time_embedding_type=time_embedding_type)
    unet.save_pretrained(tmp_path)
    size = sum(p.numel() for p in unet.parameters()) * 2  # bytes in bf16
    budget = {"cpu": int(size * 1.5)}  # fits in bf16, not in float32
    loaded = SmallUNet.from_pretrained(tmp_path, torch_dtype=torch.bfloat16, device_map="auto", max_memory=budget)
    assert set(loaded.hf_device_map.values()) == {"cpu"} and loaded.dtype == torch.bfloat16
    direct = SmallUNet.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)  # Fourier frequencies kept float32
    torch.testing.assert_close(dict(loaded.named_buffers()), dict(direct.named_buffers()), rtol=0, atol=0)
    sample, _, text = make_inputs()
    sigma = torch.tensor([0.5, 0.01]) if time_embedding_type == "fourier" else torch.tensor([3, 900])
    torch.testing.assert_close(
        run(loaded, sample.bfloat16(), sigma, text.bfloat16()),
        run(direct.eval(), sample.bfloat16(), sigma, text.bfloat16()),
        rtol=0,
        atol=0,
    )


SCHEDULERS = sorted(cls.__name__ for cls in DDPMScheduler().compatibles)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_accepts_every_compatible_scheduler(name):
    import diffusers

    unet = make_unet()
    sample, _, text = make_inputs()
    try:
        scheduler = getattr(diffusers, name).from_config(DDPMScheduler().config)
        scheduler.set_timesteps(5)
    except (ImportError, ModuleNotFoundError) as error:  # DPMSolverSDEScheduler needs torchsde
        pytest.skip(f"{name} needs a package that is not installed: {error}")
    latents = sample * scheduler.init_noise_sigma
    for t in scheduler.timesteps[:2]:
        model_input = scheduler.scale_model_input(latents, t)
        out = run(unet, model_input, t, text)  # t as the scheduler gives it: int or float 0-d tensor
        assert out.shape == sample.shape and torch.isfinite(out).all()
        python_t = t.item()  # and as a Python int / float
        torch.testing.assert_close(run(unet, model_input, python_t, text), out, rtol=1e-6, atol=1e-6)


def test_scheduler_timestep_kinds_are_covered():
    """Guard: the scheduler test above really sees both integer and float timesteps."""
    import diffusers

    dtypes = set()
    for name in ("DDIMScheduler", "EulerDiscreteScheduler"):
        scheduler = getattr(diffusers, name).from_config(DDPMScheduler().config)
        scheduler.set_timesteps(5)
        dtypes.add(scheduler.timesteps.dtype.is_floating_point)
    assert dtypes == {False, True}


def test_dtype_cast_without_diffusers_bogus_fp32_warning():
    # diffusers 0.42's ModelMixin.to warns "should be kept in float32: []" on every dtype cast, even with no such
    # module; our models cast quietly, and a model that lists fp32 modules is still warned about
    import logging

    from diffusers import AutoencoderKL

    from sdscratch.models.vae import SmallVAE

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    records, diffusers_logger = Records(), logging.getLogger("diffusers")  # diffusers' loggers do not propagate
    diffusers_logger.addHandler(records)
    try:
        unet, vae = make_unet(), SmallVAE(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4)
        unet.to(torch.bfloat16)
        vae.to("cpu", torch.bfloat16)
        assert not [m for m in records.messages if "kept in float32" in m]
        assert unet.dtype == vae.dtype == torch.bfloat16
        AutoencoderKL(block_out_channels=(8,), norm_num_groups=4).to(torch.bfloat16)  # diffusers' own model
        assert any("should be kept in float32: []" in m for m in records.messages)  # the bug worked around
        unet._keep_in_fp32_modules = ["time_embedding"]
        unet.to(torch.float32)
        assert any("should be kept in float32: ['time_embedding']" in m for m in records.messages)
    finally:
        diffusers_logger.removeHandler(records)


def test_levels_take_and_give_skips_as_values_under_offload_hooks(tmp_path):
    """Hooks that move a module's inputs hand it a *copy* of its arguments: diffusers' block-level group offload,
    accelerate's dispatch with disk offload (`from_pretrained(device_map=..., offload_folder=...)`). A level that
    appended to or popped from a `skips` list argument lost its changes there: the up path then failed with a
    size mismatch. Both give the plain model's output exactly."""
    unet = make_unet()
    sample, t, text = make_inputs()
    expected = run(unet, sample, t, text)

    offloaded = copy.deepcopy(unet)
    offloaded.enable_group_offload(
        torch.device("cpu"), offload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
    )
    torch.testing.assert_close(run(offloaded, sample, t, text), expected, rtol=0, atol=0)

    unet.save_pretrained(tmp_path / "unet")
    device_map = {
        "time_embedding": "cpu",
        "conv_in": "cpu",
        "down_blocks": "disk",
        "mid_block": "cpu",
        "up_blocks": "disk",
        "conv_norm_out": "cpu",
        "conv_out": "cpu",
    }
    dispatched = SmallUNet.from_pretrained(tmp_path / "unet", device_map=device_map, offload_folder=tmp_path / "off")
    torch.testing.assert_close(run(dispatched.eval(), sample, t, text), expected, rtol=0, atol=0)


def test_ema_model_save_pretrained_keeps_the_fourier_frequencies(tmp_path):
    """diffusers' training-script pattern: `EMAModel(unet.parameters(), model_cls=SmallUNet,
    model_config=unet.config).save_pretrained(path)` rebuilds the model `from_config` and copies the *parameters*
    only. The Fourier frequencies are a buffer: they were drawn afresh from the global RNG there, so the saved EMA
    model gave other outputs than the model it averaged (0.1 apart here). Now every model of a config has the same
    ones, drawn from a fixed seed."""
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    unet = SmallUNet(**{**TINY, "time_embedding_type": "fourier"}).eval()
    torch.manual_seed(1)  # another global RNG state: the frequencies must not depend on it
    assert torch.equal(
        SmallUNet(**{**TINY, "time_embedding_type": "fourier"}).time_embedding.fourier_weight,
        unet.time_embedding.fourier_weight,
    )
    ema = EMAModel(unet.parameters(), model_cls=SmallUNet, model_config=unet.config)
    ema.step(unet.parameters())
    ema.save_pretrained(tmp_path / "unet_ema")
    loaded = SmallUNet.from_pretrained(tmp_path / "unet_ema").eval()
    sample, _, text = make_inputs()
    sigma = torch.tensor([0.5, 0.01])
    torch.testing.assert_close(run(loaded, sample, sigma, text), run(unet, sample, sigma, text), rtol=0, atol=0)
    # and the EMA reloaded as diffusers' scripts do on resume, copied into a fresh model
    restored = EMAModel.from_pretrained(tmp_path / "unet_ema", model_cls=SmallUNet)
    fresh = SmallUNet.from_config(unet.config).eval()
    restored.copy_to(fresh.parameters())
    torch.testing.assert_close(run(fresh, sample, sigma, text), run(unet, sample, sigma, text), rtol=0, atol=0)


@pytest.mark.parametrize("time_embedding_type", ["positional", "fourier"])
def test_meta_device_build_then_load_state_dict(time_embedding_type):
    """Built on the meta device (`with torch.device("meta")`, accelerate's `init_empty_weights(include_buffers=
    True)`), then `to_empty` + `load_state_dict`: every tensor the model computes with comes from the checkpoint or
    the config, as with UNet2DConditionModel. The positional frequencies were a non-persistent buffer, in no
    checkpoint: they kept `to_empty`'s uninitialised memory, and the outputs were wrong, silently."""
    unet = make_unet(time_embedding_type=time_embedding_type)
    sample, t, text = make_inputs()
    if time_embedding_type == "fourier":
        t = torch.tensor([0.5, 0.01])
    with torch.device("meta"):
        empty = SmallUNet(**{**TINY, "time_embedding_type": time_embedding_type})
    empty.to_empty(device="cpu")
    for tensor in empty.state_dict().values():
        tensor.fill_(1e6)  # what uninitialised memory may hold
    empty.load_state_dict(unet.state_dict())
    torch.testing.assert_close(run(empty.eval(), sample, t, text), run(unet, sample, t, text), rtol=0, atol=0)


# Parity with diffusers' own blocks, where the math is the same: each weight copied into the reference block, every
# parameter random (`randomize`), so a swapped sin/cos, a wrong head split, a missing residual or norm shows.


@pytest.mark.parametrize("flip_sin_to_cos", [True, False])
@pytest.mark.parametrize("freq_shift", [0.0, 1.0])
def test_positional_time_embedding_matches_diffusers(flip_sin_to_cos, freq_shift, randomize):
    from diffusers.models.embeddings import TimestepEmbedding as DiffusersTimestepEmbedding
    from diffusers.models.embeddings import get_timestep_embedding

    embedding = make_unet(flip_sin_to_cos=flip_sin_to_cos, freq_shift=freq_shift).time_embedding
    t = torch.tensor([0.0, 1.0, 37.5, 999.0])
    features = get_timestep_embedding(t, 16, flip_sin_to_cos=flip_sin_to_cos, downscale_freq_shift=freq_shift)
    torch.testing.assert_close(embedding.features(t), features)
    reference = DiffusersTimestepEmbedding(16, 64)  # linear_1 -> SiLU -> linear_2, as UNet2DConditionModel
    reference.load_state_dict(randomize(embedding).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(embedding(t, torch.float32), reference(features))
    # an odd width: the features zero padded to it, as diffusers
    odd = TimestepEmbedding(15, 60, flip_sin_to_cos=flip_sin_to_cos, freq_shift=freq_shift)
    expected = get_timestep_embedding(t, 15, flip_sin_to_cos=flip_sin_to_cos, downscale_freq_shift=freq_shift)
    torch.testing.assert_close(odd.features(t), expected)


@pytest.mark.parametrize("flip_sin_to_cos", [True, False])
@pytest.mark.parametrize("channels", [16, 15])
def test_fourier_time_embedding_matches_diffusers(flip_sin_to_cos, channels):
    from diffusers.models.embeddings import GaussianFourierProjection

    embedding = TimestepEmbedding(channels, 4 * channels, "fourier", flip_sin_to_cos=flip_sin_to_cos)
    reference = GaussianFourierProjection(channels // 2, log=False, flip_sin_to_cos=flip_sin_to_cos)
    reference.weight.data.copy_(embedding.fourier_weight)
    sigma = torch.tensor([0.0, 0.002, 0.5, 1.0])
    with torch.no_grad():
        expected = torch.nn.functional.pad(reference(sigma), (0, channels % 2))  # odd width: zero padded
    torch.testing.assert_close(embedding.features(sigma), expected)
    # frequencies ~ N(0, 16^2), as diffusers' UNet2DModel (fourier) and score-SDE
    assert 12 < TimestepEmbedding(512, 64, "fourier").fourier_weight.std() < 20


def _diffusers_attention_state(attention: Attention) -> dict:
    """Our fused projections (rows q; k; v) as diffusers' `Attention` names them."""
    state = {"to_out.0.weight": attention.to_out.weight, "to_out.0.bias": attention.to_out.bias}
    if attention.is_cross:
        q, (k, v) = attention.to_q.weight, attention.to_kv.weight.chunk(2)
    else:
        q, k, v = attention.to_qkv.weight.chunk(3)
    return {**state, "to_q.weight": q, "to_k.weight": k, "to_v.weight": v}


def _text_and_bias(batch=BATCH, seed=2):
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, SEQ, 24, generator=generator)
    mask = torch.ones(batch, SEQ)
    mask[0, 3:] = 0  # the first prompt is padded, the second is not
    return context, ((1.0 - mask) * -10000.0)[:, None, :]  # (B, 1, L) as UNet2DConditionModel hands it on


@torch.no_grad()
def test_transformer_block_matches_diffusers_basic_transformer_block(randomize):
    from diffusers.models.attention import BasicTransformerBlock

    from sdscratch.models.unet_blocks import TransformerBlock

    block = randomize(TransformerBlock(32, heads=2, context_dim=24))
    reference = BasicTransformerBlock(32, 2, 16, cross_attention_dim=24, activation_fn="gelu", attention_bias=False)
    state = {k: v for k, v in block.state_dict().items() if k.startswith(("norm", "ff_"))}
    state = {k.replace("ff_in.", "ff.net.0.proj.").replace("ff_out.", "ff.net.2."): v for k, v in state.items()}
    for name in ("attn1", "attn2"):
        state.update({f"{name}.{k}": v for k, v in _diffusers_attention_state(getattr(block, name)).items()})
    reference.load_state_dict(state)
    hidden_states = torch.randn(BATCH, 32, 2, 3, generator=torch.Generator().manual_seed(1))  # not square
    context, bias = _text_and_bias()
    tokens = hidden_states.flatten(2).transpose(1, 2)  # (B, HW, C)
    for attn_bias in (None, bias):
        expected = reference(tokens, encoder_hidden_states=context, encoder_attention_mask=attn_bias)
        out = block(hidden_states, context, None if attn_bias is None else attn_bias[:, None])
        torch.testing.assert_close(out, expected.transpose(1, 2).reshape(hidden_states.shape))


@torch.no_grad()
def test_cross_attention_block_matches_diffusers_attention(randomize):
    from diffusers.models.attention_processor import Attention as DiffusersAttention

    from sdscratch.models.unet_blocks import CrossAttentionBlock

    block = randomize(CrossAttentionBlock(32, heads=2, context_dim=24))
    reference = DiffusersAttention(32, cross_attention_dim=24, heads=2, dim_head=16)
    reference.load_state_dict(_diffusers_attention_state(block.attn))
    hidden_states = torch.randn(BATCH, 32, 2, 3, generator=torch.Generator().manual_seed(1))
    context, bias = _text_and_bias()
    tokens = hidden_states.flatten(2).transpose(1, 2)
    normed = torch.nn.functional.layer_norm(tokens, (32,), block.norm.weight, block.norm.bias)
    expected = tokens + reference(normed, encoder_hidden_states=context, attention_mask=bias)  # pre-norm residual
    out = block(hidden_states, context, bias[:, None])
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(hidden_states.shape))


@pytest.mark.parametrize("temb_channels", [64, None])  # UNet, VAE
@pytest.mark.parametrize("in_channels, out_channels", [(16, 64), (64, 64)])
def test_resnet_and_resamplers_match_diffusers(temb_channels, in_channels, out_channels, randomize):
    """ResnetBlock as diffusers' ResnetBlock2D (dropout in place: train mode, one seed; 32 groups, a map narrower than
    that normalised per channel: diffusers' `groups` = its channels), Upsample / Downsample as Upsample2D /
    Downsample2D(padding=1). The output map has 2 channels per group: one group per channel would subtract the
    time embedding's per-channel shift again, and hide it."""
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    from sdscratch.models.layers import Downsample, ResnetBlock, Upsample

    block = randomize(ResnetBlock(in_channels, out_channels, temb_channels, norm_num_groups=32, dropout=0.5))
    reference = ResnetBlock2D(
        in_channels=in_channels,
        out_channels=out_channels,
        temb_channels=temb_channels,
        groups=min(in_channels, 32),
        groups_out=32,
        dropout=0.5,
        eps=1e-6,
    )
    reference.load_state_dict(block.state_dict())
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, in_channels, 4, 6, generator=generator)
    temb = torch.randn(BATCH, temb_channels, generator=generator) if temb_channels else None
    outputs = []
    for module in (block, reference):
        torch.manual_seed(3)  # the same dropout mask
        outputs.append(module.train()(x, temb))
    torch.testing.assert_close(outputs[0], outputs[1])
    assert not torch.allclose(block(x, temb), block(x, temb))  # dropout really drops
    torch.testing.assert_close(block.eval()(x, temb), reference.eval()(x, temb))

    for ours, theirs in ((Upsample, Upsample2D), (Downsample, Downsample2D)):
        resampler = randomize(ours(in_channels, out_channels))
        reference = theirs(in_channels, use_conv=True, out_channels=out_channels)  # Downsample2D: padding=1
        reference.load_state_dict(resampler.state_dict(), strict=False)  # Downsample2D also aliases it Conv2d_0
        with torch.no_grad():
            torch.testing.assert_close(resampler(x), reference(x))


@pytest.mark.parametrize("skip_connection", ["concat", "add"])
def test_up_path_merges_the_latest_skip_first(skip_connection):
    """The up path merges the down path's skips in reverse order of creation (the last one first), each after the
    hidden state for "concat" (`torch.cat([hidden_states, skip])`, as UNet2DConditionModel), added for "add". Every
    up resnet's input is checked against the skip it must get, recorded on the way down."""
    unet = make_unet(skip_connection=skip_connection, layers_per_block=(1, 2))
    sample, t, text = make_inputs()
    down_skips, events = [], []
    hooks = [unet.conv_in.register_forward_hook(lambda m, args, out: down_skips.append(out))]
    for level in unet.down_blocks:
        hooks.append(level.register_forward_hook(lambda m, args, out: down_skips.extend(out[1])))
    for level in unet.up_blocks:
        hooks.append(level.register_forward_pre_hook(lambda m, args: events.append(("level input", args[0]))))
        for i, resnet in enumerate(level.resnets):
            hooks.append(resnet.register_forward_pre_hook(lambda m, args: events.append(("resnet input", args[0]))))
            last = level.attentions[i] if level.attentions is not None else resnet
            hooks.append(last.register_forward_hook(lambda m, args, out: events.append(("layer output", out))))
    run(unet, sample, t, text)
    for hook in hooks:
        hook.remove()
    assert len(down_skips) == 1 + 2 + 2  # conv_in, level 0: one layer + Downsample, level 1: two layers
    expected_skips, merged, current = down_skips[::-1], 0, None  # current: the hidden state before the next merge
    for kind, tensor in events:
        if kind != "resnet input":
            current = tensor
            continue
        skip = expected_skips[merged]
        expected = torch.cat([current, skip], dim=1) if skip_connection == "concat" else current + skip
        torch.testing.assert_close(tensor, expected, rtol=0, atol=0)
        merged += 1
    assert merged == len(down_skips)


def test_batch_samples_are_independent():
    """Each sample of a batch gets its own timestep (and text): the batch's outputs are the ones of each sample run
    alone, as a pipeline with classifier-free guidance or img2img relies on."""
    unet = make_unet()
    sample, _, text = make_inputs()
    t = torch.tensor([10, 900])
    batched = run(unet, sample, t, text)
    for i in range(BATCH):
        alone = run(unet, sample[i : i + 1], t[i].item(), text[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-5, atol=1e-5)


def test_dropout_config_reaches_every_resnet():
    unet = make_unet(dropout=0.5)
    sample, t, text = make_inputs()
    torch.testing.assert_close(run(unet, sample, t, text), run(unet, sample, t, text), rtol=0, atol=0)  # eval
    unet.train()
    assert not torch.allclose(run(unet, sample, t, text), run(unet, sample, t, text))
    resnets = [m for m in unet.modules() if type(m).__name__ == "ResnetBlock"]
    assert resnets and all(resnet.dropout.p == 0.5 for resnet in resnets)


def test_gradient_checkpointing_is_applied():
    """`enable_gradient_checkpointing` must really checkpoint (equal gradients alone cannot tell): diffusers' hook for
    a custom checkpointing function sees every resnet and attention block, in training only."""
    from torch.utils.checkpoint import checkpoint

    calls = []

    def checkpointing(module, *args):
        calls.append(type(module).__name__)
        return checkpoint(module.__call__, *args, use_reentrant=False)

    unet = make_unet().train()
    unet.enable_gradient_checkpointing(checkpointing)
    sample, t, text = make_inputs()
    run(unet, sample, t, text)
    assert calls == []  # no gradients: nothing to save memory for
    unet(sample, t, text).sample.mean().backward()
    resnets = sum(type(m).__name__ == "ResnetBlock" for m in unet.modules())
    assert calls.count("ResnetBlock") == resnets and calls.count("TransformerBlock") == 1 + 1 + 2  # down, mid, up


def test_output_head_reads_the_up_path_through_groupnorm_and_silu():
    """After the up path: GroupNorm -> SiLU -> conv_out, as UNet2DConditionModel (conv_norm_out, conv_act, conv_out)."""
    unet = make_unet()
    sample, t, text = make_inputs()
    seen = {}
    hooks = [
        unet.up_blocks[-1].register_forward_hook(lambda m, args, out: seen.__setitem__("up", out)),
        unet.conv_norm_out.register_forward_hook(lambda m, args, out: seen.update(norm_in=args[0], norm_out=out)),
        unet.conv_out.register_forward_pre_hook(lambda m, args: seen.__setitem__("conv_in", args[0])),
    ]
    run(unet, sample, t, text)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(seen["norm_in"], seen["up"], rtol=0, atol=0)
    torch.testing.assert_close(seen["conv_in"], torch.nn.functional.silu(seen["norm_out"]), rtol=0, atol=0)


def test_numpy_float32_config_values_are_refused_before_save_pretrained_fails(tmp_path):
    # np.float32 is no Python float: the model was built, then save_pretrained raised "Object of type float32 is not
    # JSON serializable" and left an empty config.json behind
    for key in ("dropout", "freq_shift"):
        with pytest.raises(ValueError, match=rf"`{key}` must be .*a Python int or float.*got np.float32\(0.0\)"):
            SmallUNet(**{**TINY, key: np.float32(0.0)})
    make_unet(dropout=np.float64(0.1)).save_pretrained(tmp_path)  # a float subclass: JSON stores it
    assert SmallUNet.from_pretrained(tmp_path).config.dropout == 0.1
