"""SmallUNet: a from-scratch conditional UNet, call-compatible with diffusers' ``UNet2DConditionModel``.

Layout (``block_out_channels=(C0, C1, C2)``, ``layers_per_block=L``)::

    conv_in (in -> C0)                                           skip
    level 0: L x [resnet (+ transformer)]  -> Downsample C0->C1   skips
    level 1: L x [resnet (+ transformer)]  -> Downsample C1->C2   skips
    level 2: L x [resnet (+ transformer)]                         skips
    mid:     resnet, transformer, resnet
    up 2:  (L+1) x [merge skip, resnet (+ transformer)] -> Upsample C2->C1
    up 1:  (L+1) x [merge skip, resnet (+ transformer)] -> Upsample C1->C0
    up 0:  (L+1) x [merge skip, resnet (+ transformer)]
    GroupNorm -> SiLU -> conv_out (C0 -> out)

The resamplers change the channels, so every skip at a level has that level's width and ``"add"`` skip
connections need no projections. Speed choices are explained in ``unet_blocks.py``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn

from .layers import QuietDtypeCastMixin, check_block_out_channels, check_positive_int, group_norm
from .unet_blocks import MidBlock, TimestepEmbedding, UNetLevel, num_heads_for, seeded_fourier_frequencies

SKIP_CONNECTIONS = ("concat", "add")
TIME_EMBEDDING_TYPES = ("positional", "fourier")


def _restore_fourier_frequencies(model: nn.Module) -> None:
    """After a load at a low dtype: each Fourier time embedding whose frequencies are the seeded ones rounded to
    that dtype (every model of a config has them, see `TimestepEmbedding`) gets them back exactly, in float32; a
    checkpoint with frequencies of its own keeps what was loaded."""
    dtype = model.dtype  # the loader rounded the buffer to it (`TimestepEmbedding._apply` then kept it float32)
    for module in model.modules():
        frequencies = getattr(module, "fourier_weight", None) if isinstance(module, TimestepEmbedding) else None
        if frequencies is None or frequencies.is_meta or dtype == torch.float32:
            continue
        seeded = seeded_fourier_frequencies(frequencies.numel())
        if torch.equal(seeded.to(dtype).float(), frequencies.detach().float().cpu()):
            module._buffers["fourier_weight"] = seeded.to(frequencies.device)


class SmallUNet(QuietDtypeCastMixin, ModelMixin, ConfigMixin):
    r"""A small conditional UNet for latent diffusion, fast on CPU (fp32 and bf16 autocast).

    Call-compatible with ``UNet2DConditionModel``: ``unet(sample, timestep, encoder_hidden_states).sample``.

    Args:
        sample_size (`int`, defaults to 16): Height and width of the latents.
        in_channels (`int`, defaults to 4): Channels of the input sample.
        out_channels (`int`, defaults to 4): Channels of the output.
        block_out_channels (`tuple[int]`, defaults to `(64, 128, 192)`): Channels per resolution level.
            The spatial size must be divisible by ``2 ** (len(block_out_channels) - 1)``.
        layers_per_block (`int` or `tuple[int]`, defaults to 1): Resnet layers per down level (the up levels have
            one more); one number for every level, or one per level as in ``UNet2DConditionModel``.
        transformer_levels (`tuple[bool]`, defaults to `(False, True, True)`): Which levels carry a transformer
            block (self-attention + cross-attention + MLP) after each resnet, one flag per level. The mid block
            always carries one.
        cross_attention_levels (`tuple[bool]`, *optional*): Levels *without* a transformer that still read the
            text: a light ``CrossAttentionBlock`` (LayerNorm + cross-attention, no self-attention, no MLP) after
            each resnet, one flag per level. Cheap at the highest resolution, where small details (a mouth, an
            eye colour) live. `None` (default) = none. Needs ``cross_attention_dim``.
        cross_attention_dim (`int`, *optional*, defaults to 256): Width of ``encoder_hidden_states``. `None`
            makes an unconditional UNet: no cross-attention, and passing text raises ``ValueError``.
        attention_head_dim (`int`, defaults to 64): Channels **per head** (unlike ``UNet2DConditionModel``, where
            ``attention_head_dim=8`` actually means 8 heads). A level with C channels gets ``C // attention_head_dim``
            heads, or one head of width C if C is smaller; it must otherwise divide C. One number for every level,
            or one per level (the mid block takes the last), as in ``UNet2DConditionModel``.
        skip_connection (`str`, defaults to `"concat"`): How the up path merges skips: ``"concat"`` (channel
            concatenation, as diffusers) or ``"add"`` (sum; fewer parameters and FLOPs).
        time_embedding_type (`str`, defaults to `"positional"`): ``"positional"`` (sinusoidal, for discrete
            timesteps 0..999 and the fractional ones of Euler-type schedulers) or ``"fourier"`` (Gaussian Fourier
            features of the raw value, for continuous time or sigma in (0, 1]).
        flip_sin_to_cos (`bool`, defaults to `True`), freq_shift (`float`, defaults to 0.0): Sinusoidal embedding
            options, as diffusers.
        dropout (`float`, defaults to 0.0): Dropout inside the resnets.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups; must divide every normalised width at least as
            large (each level's channels, and twice them where ``"concat"`` skips are merged), else ``ValueError``
            as in diffusers; a narrower one (tiny configs) normalises each channel on its own. Where a level has
            no more channels than groups, its resnets' second GroupNorm removes the per-channel timestep shift
            added before it (as in diffusers' `ResnetBlock2D`): that level's resnets do not see the timestep.
        time_cond_proj_dim (`None`): Always None; in the config because diffusers pipelines read
            ``unet.config.time_cond_proj_dim`` (the LCM guidance embedding, which SmallUNet does not have).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResnetBlock", "TransformerBlock", "CrossAttentionBlock"]
    _skip_layerwise_casting_patterns = ["norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: tuple[int, ...] = (64, 128, 192),
        layers_per_block: Union[int, tuple[int, ...]] = 1,
        transformer_levels: tuple[bool, ...] = (False, True, True),
        cross_attention_levels: Optional[tuple[bool, ...]] = None,
        cross_attention_dim: Optional[int] = 256,
        attention_head_dim: Union[int, tuple[int, ...]] = 64,
        skip_connection: str = "concat",
        time_embedding_type: str = "positional",
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0.0,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        time_cond_proj_dim: Optional[int] = None,
    ):
        super().__init__()
        if time_cond_proj_dim is not None:
            raise ValueError(
                f"`time_cond_proj_dim` must be None (SmallUNet has no guidance embedding), got {time_cond_proj_dim}."
            )
        check_block_out_channels(block_out_channels)
        for key, value in (("sample_size", sample_size), ("in_channels", in_channels), ("out_channels", out_channels)):
            check_positive_int(value, key)
        if cross_attention_dim is not None:
            check_positive_int(cross_attention_dim, "cross_attention_dim", "or None (unconditional)")
        if not _is_real(dropout) or not 0 <= dropout <= 1:
            raise ValueError(f"`dropout` must be a probability in [0, 1] (a Python int or float), got {dropout!r}.")
        if not isinstance(flip_sin_to_cos, bool):
            raise ValueError(f"`flip_sin_to_cos` must be True or False, got {flip_sin_to_cos!r}.")
        half = block_out_channels[0] // 2  # sinusoidal frequencies exp(-ln(10000) * i / (half - freq_shift))
        if not _is_real(freq_shift) or (time_embedding_type == "positional" and half and freq_shift >= half):
            raise ValueError(
                f"`freq_shift` must be a number below block_out_channels[0] // 2 = {half} (diffusers uses 0 or 1; "
                f"a Python int or float), got {freq_shift!r}."
            )
        for key, flags in (
            ("transformer_levels", transformer_levels),
            ("cross_attention_levels", cross_attention_levels),
        ):
            if isinstance(flags, (list, tuple)) and any(not isinstance(f, int) or f not in (0, 1) for f in flags):
                raise ValueError(f"`{key}` must hold True or False for each level, got {flags!r}.")
        layers = _per_level(layers_per_block, "layers_per_block", len(block_out_channels))
        head_dims = _per_level(attention_head_dim, "attention_head_dim", len(block_out_channels))
        if not isinstance(norm_num_groups, int) or norm_num_groups < 1:
            raise ValueError(f"`norm_num_groups` must be a positive int, got {norm_num_groups!r}.")
        if not isinstance(transformer_levels, (list, tuple)) or len(transformer_levels) != len(block_out_channels):
            raise ValueError(
                f"`transformer_levels` needs one flag per level of `block_out_channels`={tuple(block_out_channels)}, "
                f"got {transformer_levels!r}."
            )
        if cross_attention_levels is not None:
            if not isinstance(cross_attention_levels, (list, tuple)) or len(cross_attention_levels) != len(
                block_out_channels
            ):
                raise ValueError(
                    "`cross_attention_levels` needs one flag per level of `block_out_channels`="
                    f"{tuple(block_out_channels)}, got {cross_attention_levels!r}."
                )
            both = [i for i, (t, c) in enumerate(zip(transformer_levels, cross_attention_levels)) if t and c]
            if both:
                raise ValueError(
                    f"`cross_attention_levels` flags level(s) {both} that already carry a transformer "
                    f"(`transformer_levels`={tuple(transformer_levels)}); a level takes one or the other."
                )
            if any(cross_attention_levels) and cross_attention_dim is None:
                raise ValueError("`cross_attention_levels` needs text: `cross_attention_dim` must not be None.")
        if skip_connection not in SKIP_CONNECTIONS:
            raise ValueError(f"`skip_connection` must be one of {SKIP_CONNECTIONS}, got {skip_connection!r}.")
        if time_embedding_type not in TIME_EMBEDDING_TYPES:
            raise ValueError(
                f"`time_embedding_type` must be one of {TIME_EMBEDDING_TYPES}, got {time_embedding_type!r}."
            )
        self.time_cond_proj_dim = None  # also an attribute, as UNet2DConditionModel

        channels = list(block_out_channels)
        time_embed_dim = 4 * channels[0]
        self.time_embedding = TimestepEmbedding(
            channels[0], time_embed_dim, time_embedding_type, flip_sin_to_cos, freq_shift
        )
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)

        common = dict(
            temb_channels=time_embed_dim,
            context_dim=cross_attention_dim,
            norm_num_groups=norm_num_groups,
            dropout=dropout,
        )
        cross_only = list(cross_attention_levels or [False] * len(channels))
        heads = [
            num_heads_for(c, head_dim) if flag or cross else None
            for c, head_dim, flag, cross in zip(channels, head_dims, transformer_levels, cross_only)
        ]
        last = len(channels) - 1
        self.down_blocks = nn.ModuleList(
            UNetLevel(
                channels[i],
                layers[i],
                heads=heads[i],
                cross_attention_only=cross_only[i],
                next_channels=channels[i + 1] if i < last else None,
                **common,
            )
            for i in range(len(channels))
        )
        self.mid_block = MidBlock(channels[-1], heads=num_heads_for(channels[-1], head_dims[-1]), **common)
        self.up_blocks = nn.ModuleList(
            UNetLevel(
                channels[i],
                layers[i] + 1,
                heads=heads[i],
                cross_attention_only=cross_only[i],
                up=True,
                next_channels=channels[i - 1] if i > 0 else None,
                skip_connection=skip_connection,
                **common,
            )
            for i in reversed(range(len(channels)))
        )
        self.conv_norm_out = group_norm(channels[0], norm_num_groups, eps=1e-5)
        self.conv_out = nn.Conv2d(channels[0], out_channels, kernel_size=3, padding=1)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> SmallUNet:
        """`ModelMixin.from_pretrained`, except that a `dtype` (or `torch_dtype`) other than float32 is applied after
        loading, with `.to(dtype)`: that keeps the Fourier frequencies (`time_embedding_type="fourier"`) in float32,
        as `TimestepEmbedding._apply` does for every cast, where diffusers' loader would round them (to bf16 they
        shift the phase of every time feature). The weights come out as a direct load gives them.
        (`_keep_in_fp32_modules` would do it too, but makes diffusers warn on every `pipe.to(dtype)` and refuse
        `low_cpu_mem_usage=False`.) With a `device_map`, the load is diffusers' own at `dtype` (accelerate places the
        layers at their loaded sizes) and the rounded frequencies are put back afterwards."""
        key = "dtype" if kwargs.get("dtype") is not None else "torch_dtype"  # diffusers 0.42: `dtype` replaces it
        torch_dtype = kwargs.get(key)
        plain_load = (
            not isinstance(torch_dtype, torch.dtype)
            or torch_dtype == torch.float32
            or not torch_dtype.is_floating_point
            or kwargs.get("quantization_config") is not None
        )
        if plain_load:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if kwargs.get("device_map") is not None:
            # accelerate plans the placement at the loaded dtype's sizes: a float32 load put bf16-sized layers on
            # disk (or out of GPU memory); load as diffusers does, then put back the frequencies it rounded
            loaded = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
            _restore_fourier_frequencies(loaded[0] if isinstance(loaded, tuple) else loaded)
            return loaded
        loaded = super().from_pretrained(pretrained_model_name_or_path, **{**kwargs, key: torch.float32})
        # `output_loading_info=True` returns `(model, loading_info)`: cast the model, return what diffusers returned
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # nn.Module.to: ModelMixin.to (diffusers 0.42) warns about fp32 modules on every dtype cast, even with none
        nn.Module.to(model, torch_dtype)
        return loaded

    @property
    def downsample_factor(self) -> int:
        """Spatial sizes must be divisible by this: ``2 ** (len(block_out_channels) - 1)``."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def check_inputs(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        encoder_hidden_states: Optional[torch.Tensor],
        encoder_attention_mask: Optional[torch.Tensor],
    ) -> None:
        """Raises ``ValueError`` naming the argument, its value and what is allowed (before any computation)."""
        config = self.config
        if not torch.is_tensor(sample) or sample.ndim != 4:
            shape = tuple(sample.shape) if torch.is_tensor(sample) else type(sample).__name__
            raise ValueError(f"`sample` must be a (batch, channels, height, width) tensor, got {shape}.")
        batch, channels, height, width = sample.shape
        if channels != config.in_channels:
            raise ValueError(
                f"`sample` has {channels} channels (shape {tuple(sample.shape)}); this UNet takes "
                f"in_channels={config.in_channels}."
            )
        factor = self.downsample_factor
        if height % factor != 0 or width % factor != 0:
            raise ValueError(
                f"`sample` spatial size {height}x{width} must be divisible by {factor} "
                f"(2 ** (len(block_out_channels) - 1) with block_out_channels={tuple(config.block_out_channels)})."
            )
        num_timesteps, shape = 1, None
        if torch.is_tensor(timestep) or isinstance(timestep, np.ndarray):
            num_timesteps, shape = math.prod(timestep.shape), f"shape {tuple(timestep.shape)}"
        elif isinstance(timestep, (list, tuple)):
            num_timesteps, shape = len(timestep), f"a {type(timestep).__name__} of {len(timestep)}"
        elif not isinstance(timestep, numbers.Real):
            raise TypeError(
                f"`timestep` must be a number, a tensor or a list of numbers, got {type(timestep).__name__}."
            )
        if num_timesteps not in (1, batch):
            raise ValueError(f"`timestep` must be a scalar or hold one value per sample ({batch}), got {shape}.")
        for name, value in (
            ("encoder_hidden_states", encoder_hidden_states),
            ("encoder_attention_mask", encoder_attention_mask),
        ):
            if value is not None and not torch.is_tensor(value):
                raise TypeError(f"`{name}` must be a torch.Tensor or None, got {type(value).__name__}.")
        if config.cross_attention_dim is None:
            if encoder_hidden_states is not None or encoder_attention_mask is not None:
                raise ValueError(
                    "This UNet is unconditional (cross_attention_dim=None): `encoder_hidden_states` and "
                    "`encoder_attention_mask` must be None, got "
                    f"{_shape(encoder_hidden_states)} and {_shape(encoder_attention_mask)}."
                )
            return
        if encoder_hidden_states is None:
            raise ValueError(
                f"`encoder_hidden_states` is required (batch, seq_len, {config.cross_attention_dim}) for this "
                "conditional UNet; build it with cross_attention_dim=None for an unconditional one."
            )
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[2] != config.cross_attention_dim:
            raise ValueError(
                f"`encoder_hidden_states` must have shape (batch, seq_len, {config.cross_attention_dim}) "
                f"(cross_attention_dim), got {tuple(encoder_hidden_states.shape)}."
            )
        if encoder_hidden_states.shape[0] != batch:
            raise ValueError(
                f"`encoder_hidden_states` batch size {encoder_hidden_states.shape[0]} must equal the batch size "
                f"of `sample` ({batch})."
            )
        if encoder_attention_mask is not None and tuple(encoder_attention_mask.shape) != tuple(
            encoder_hidden_states.shape[:2]
        ):
            raise ValueError(
                f"`encoder_attention_mask` must have shape (batch, seq_len) = {tuple(encoder_hidden_states.shape[:2])} "
                f"(1 = keep, 0 = discard), got {tuple(encoder_attention_mask.shape)}."
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        encoder_hidden_states: Optional[torch.Tensor] = None,
        class_labels: Optional[torch.Tensor] = None,
        timestep_cond: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        cross_attention_kwargs: Optional[dict[str, Any]] = None,
        added_cond_kwargs: Optional[dict[str, torch.Tensor]] = None,
        down_block_additional_residuals: Optional[tuple[torch.Tensor, ...]] = None,
        mid_block_additional_residual: Optional[torch.Tensor] = None,
        down_intrablock_additional_residuals: Optional[tuple[torch.Tensor, ...]] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[UNet2DConditionOutput, tuple]:
        r"""Predicts the model output (noise, v or x_0, as trained) for a noisy sample.

        Args:
            sample (`torch.Tensor`): Noisy latents ``(batch, in_channels, height, width)``.
            timestep (`torch.Tensor` or `float` or `int`): A scalar, a 0-d tensor or a ``(batch,)`` tensor;
                integer or float (discrete timesteps, Euler-type fractional ones, or continuous t / sigma).
            encoder_hidden_states (`torch.Tensor`, *optional*): Text embeddings ``(batch, seq_len,
                cross_attention_dim)``; required if conditional, forbidden if unconditional.
            class_labels, timestep_cond, attention_mask, cross_attention_kwargs, added_cond_kwargs,
            down_block_additional_residuals, mid_block_additional_residual, down_intrablock_additional_residuals:
                ``UNet2DConditionModel``'s arguments, in its order, so that diffusers pipelines can call this UNet
                (they pass them, mostly as `None`). SmallUNet has no class or guidance embedding, no attention
                processors (LoRA scale, IP-Adapter) and no ControlNet / T2I-Adapter inputs: each must be `None`
                (the two dicts may also be empty), else ``ValueError``. Mask the text with
                ``encoder_attention_mask``.
            encoder_attention_mask (`torch.Tensor`, *optional*): ``(batch, seq_len)``, 1 = keep, 0 = discard.
            return_dict (`bool`, defaults to `True`): Return a ``UNet2DConditionOutput`` instead of a tuple.

        Returns:
            `UNet2DConditionOutput` or `tuple`: ``sample`` of shape ``(batch, out_channels, height, width)``.
        """
        # 1. Check inputs
        unsupported = {
            "class_labels": class_labels,
            "timestep_cond": timestep_cond,
            "attention_mask": attention_mask,
            "cross_attention_kwargs": cross_attention_kwargs or None,
            "added_cond_kwargs": added_cond_kwargs or None,
            "down_block_additional_residuals": down_block_additional_residuals,
            "mid_block_additional_residual": mid_block_additional_residual,
            "down_intrablock_additional_residuals": down_intrablock_additional_residuals,
        }
        given = [name for name, value in unsupported.items() if value is not None]
        if given:
            raise ValueError(
                f"SmallUNet does not take {', '.join(f'`{name}`' for name in given)} (no class or guidance embedding, "
                "attention processors or ControlNet inputs); pass None. Text masks go in `encoder_attention_mask`."
            )
        self.check_inputs(sample, timestep, encoder_hidden_states, encoder_attention_mask)
        batch = sample.shape[0]

        # 2. Time embedding: one float32 timestep per sample
        timesteps = torch.as_tensor(timestep, device=sample.device).to(torch.float32).reshape(-1)
        timesteps = timesteps.expand(batch)  # (B,)
        temb = self.time_embedding(timesteps, dtype=sample.dtype)  # (B, 4 * C0)

        # 3. Text mask -> additive attention bias, as diffusers: 0 keep, -10000 discard
        attn_bias = None
        if encoder_attention_mask is not None:
            keep = encoder_attention_mask.to(torch.float32)
            attn_bias = ((1.0 - keep) * -10000.0)[:, None, None, :]  # (B, 1, 1, L)

        # 4. Down path, in the standard (B, C, H, W) layout: CPU GroupNorm is 6-25x slower on channels_last
        hidden_states = self.conv_in(sample.contiguous())
        skips = [hidden_states]
        for block in self.down_blocks:
            hidden_states, level_skips = block(hidden_states, temb, (), encoder_hidden_states, attn_bias)
            skips.extend(level_skips)

        # 5. Mid block
        hidden_states = self.mid_block(hidden_states, temb, encoder_hidden_states, attn_bias)

        # 6. Up path: each layer merges one skip (concat or add), the latest first; each level is handed its own
        # skips as a tuple (not the list to pop from: hooks that move inputs pass modules a copy of their arguments)
        for block in self.up_blocks:
            num_layers = len(block.resnets)
            level_skips = tuple(skips[-num_layers:])
            del skips[-num_layers:]
            hidden_states = block(hidden_states, temb, level_skips, encoder_hidden_states, attn_bias)
        assert not skips, "every skip must be consumed"

        # 7. Output
        hidden_states = self.conv_out(F.silu(self.conv_norm_out(hidden_states)))
        out = hidden_states.contiguous()  # (B, out_channels, H, W), standard layout for schedulers
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)


def _per_level(value, name: str, num_levels: int) -> list[int]:
    """An int for every level, or one per level (a list or tuple, as ``UNet2DConditionModel`` takes) -> a list."""
    values = [value] * num_levels if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(values, (list, tuple))
        or len(values) != num_levels
        or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values)
    ):
        raise ValueError(
            f"`{name}` must be a positive int or one positive int per level of `block_out_channels` "
            f"({num_levels} levels), got {value!r}."
        )
    return list(values)


def _is_real(value) -> bool:
    """A finite Python int or float: what the config's JSON stores (a NumPy float32 passed every check, then made
    `save_pretrained` fail with "not JSON serializable", leaving an empty config.json)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shape(tensor: Optional[torch.Tensor]):
    return None if tensor is None else tuple(tensor.shape)
