"""Blocks of :class:`~sdscratch.SmallUNet`: time embedding, attention, transformer block, and the UNet levels.

Designed for CPU speed (bf16 autocast on AVX512-BF16, see issue 7 and ``docs/benchmarks.md``):

- Feature maps stay in the standard ``(B, C, H, W)`` layout: CPU GroupNorm is 6-25x slower on channels_last
  (convolutions run about as fast in either layout), so a channels_last input is converted once.
- A transformer block is pre-LayerNorm on tokens (no GroupNorm, no ``proj_in`` / ``proj_out`` convolutions):
  self-attention, cross-attention, GELU MLP, each a residual branch.
- Attention uses one fused projection (QKV for self-attention, KV for cross-attention) and
  ``F.scaled_dot_product_attention`` with few wide heads (``attention_head_dim`` real channels per head,
  64 by default): narrow heads (8-16 channels) gain nothing from bf16 here. In a bf16 training step the
  attention runs as plain matmuls (``math_attention``): the CPU flash-attention backward is 3-6x slower.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Downsample, ResnetBlock, Upsample

# Gaussian Fourier features: frequencies ~ N(0, FOURIER_SCALE^2), as diffusers' UNet2DModel and score-SDE use.
FOURIER_SCALE = 16.0
# ... drawn from their own generator with this seed, never from the global RNG: every SmallUNet of a config gets the
# same frequencies, so a model rebuilt from the config alone (diffusers' `EMAModel.save_pretrained` does
# `from_config` and copies only the *parameters*) keeps the ones the trained model used.
FOURIER_SEED = 0


def seeded_fourier_frequencies(count: int) -> torch.Tensor:
    """The fixed float32 frequencies of a Fourier time embedding with `count` of them (`FOURIER_SEED`)."""
    return torch.randn(count, generator=torch.Generator().manual_seed(FOURIER_SEED)) * FOURIER_SCALE


class TimestepEmbedding(nn.Module):
    r"""Timestep -> embedding of width ``time_embed_dim``: sinusoidal or Gaussian Fourier features, then an MLP.

    Args:
        channels (`int`): Width of the features (``block_out_channels[0]``).
        time_embed_dim (`int`): Output width (``4 * channels``).
        embedding_type (`str`): ``"positional"`` (sinusoidal, as DDPM / diffusers) or ``"fourier"`` (random
            Fourier features of the raw value, for continuous time t or sigma in (0, 1]; no ``log`` so t = 0 works).
        flip_sin_to_cos (`bool`), freq_shift (`float`): As in diffusers' ``get_timestep_embedding``.
    """

    def __init__(
        self,
        channels: int,
        time_embed_dim: int,
        embedding_type: str = "positional",
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0.0,
    ):
        super().__init__()
        self.channels = channels
        self.embedding_type = embedding_type
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift
        half = channels // 2
        if embedding_type == "fourier":
            # fixed random frequencies, the same for every model of a config (see FOURIER_SEED); a buffer, so they
            # are saved with the weights (a checkpoint's own frequencies are loaded, whatever they are)
            self.register_buffer("fourier_weight", seeded_fourier_frequencies(half))
        # positional: the frequencies are computed in `features`, as diffusers' `get_timestep_embedding` does. No
        # buffer: a non-persistent one is in no checkpoint, so a model built on the meta device (accelerate's
        # `init_empty_weights(include_buffers=True)`, `with torch.device("meta")`) then `to_empty` +
        # `load_state_dict` kept uninitialised memory as its frequencies, and gave wrong outputs silently.
        self.linear_1 = nn.Linear(channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def _apply(self, fn, recurse=True):
        """Keep the Fourier frequency buffer in float32 when the model is cast (``unet.to(torch.bfloat16)``): rounded
        to bf16, frequencies would shift the phase of ``t * f`` by radians at large t."""
        frequencies = {name: buf for name, buf in self._buffers.items() if buf is not None}
        super()._apply(fn, recurse)
        for name, original in frequencies.items():
            moved = self._buffers[name]
            if not (original.is_meta or moved.is_meta) and moved.is_floating_point():
                self._buffers[name] = original.to(device=moved.device, dtype=torch.float32)
        return self

    def features(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(B,) float32 timesteps -> (B, channels) float32 features."""
        if self.embedding_type == "fourier":
            args = timesteps[:, None] * self.fourier_weight.float()[None, :] * (2 * math.pi)
        else:
            half = self.channels // 2
            exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) * (-math.log(10000.0))
            args = timesteps[:, None] * torch.exp(exponent / (half - self.freq_shift))[None, :]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, 2 * half)
        if self.flip_sin_to_cos:
            emb = torch.cat([emb[:, emb.shape[1] // 2 :], emb[:, : emb.shape[1] // 2]], dim=-1)
        if emb.shape[1] < self.channels:  # odd width: zero pad, as diffusers
            emb = F.pad(emb, (0, self.channels - emb.shape[1]))
        return emb

    def forward(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        emb = self.features(timesteps).to(dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))  # (B, time_embed_dim)


def num_heads_for(channels: int, head_dim: int) -> int:
    """Heads of width ``head_dim`` that tile ``channels``; one head of width ``channels`` if it is narrower."""
    if channels <= head_dim:
        return 1
    if channels % head_dim != 0:
        raise ValueError(
            f"`attention_head_dim`={head_dim} must divide the channels of every attention level, got {channels}."
        )
    return channels // head_dim


class Attention(nn.Module):
    r"""Multi-head attention on tokens ``(B, N, C)`` with fused projections and ``F.scaled_dot_product_attention``.

    Args:
        query_dim (`int`): Token width C.
        heads (`int`): Number of heads; head width is ``query_dim // heads``.
        context_dim (`int`, *optional*): Width of the context for cross-attention; `None` = self-attention.
    """

    def __init__(self, query_dim: int, heads: int, context_dim: Optional[int] = None):
        super().__init__()
        self.heads = heads
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.to_q = nn.Linear(query_dim, query_dim, bias=False)
            self.to_kv = nn.Linear(context_dim, 2 * query_dim, bias=False)
        else:
            self.to_qkv = nn.Linear(query_dim, 3 * query_dim, bias=False)
        self.to_out = nn.Linear(query_dim, query_dim)

    def forward(
        self, x: torch.Tensor, context: Optional[torch.Tensor] = None, attn_bias: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        batch, tokens, channels = x.shape
        heads, head_dim = self.heads, channels // self.heads
        if self.is_cross:
            q = self.to_q(x).view(batch, tokens, heads, head_dim).transpose(1, 2)  # (B, h, N, d)
            kv = self.to_kv(context).view(batch, context.shape[1], 2, heads, head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, h, L, d)
        else:
            qkv = self.to_qkv(x).view(batch, tokens, 3, heads, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
            attn_bias = None
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)  # (B, 1, 1, L) additive: 0 keep, -10000 discard
        if q.dtype == torch.float32 or not (torch.is_grad_enabled() and q.requires_grad):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # (B, h, N, d)
        else:
            out = math_attention(q, k, v, attn_bias)
        return self.to_out(out.transpose(1, 2).reshape(batch, tokens, channels))


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v with plain matmuls: (B, h, N, d), (B, h, L, d) x2 -> (B, h, N, d).

    Used for the bf16 training step: torch's CPU flash-attention *backward* in bf16 is 3-6x slower than these
    matmuls at our token counts (16-256). The softmax runs in float32 at least (float64 inputs keep float64).
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (B, h, N, L)
    if attn_bias is not None:
        scores = scores + attn_bias
    softmax_dtype = torch.promote_types(scores.dtype, torch.float32)  # upcast bf16 / fp16, never downcast fp64
    return scores.softmax(dim=-1, dtype=softmax_dtype).to(v.dtype) @ v


class TransformerBlock(nn.Module):
    r"""Pre-LayerNorm transformer block on a feature map: self-attention, cross-attention (if conditional), GELU MLP.

    Args:
        channels (`int`): Channels C of the feature map.
        heads (`int`): Attention heads.
        context_dim (`int`, *optional*): Text embedding width; `None` = no cross-attention (unconditional).
        ff_mult (`int`, defaults to 4): MLP hidden width multiplier.
    """

    def __init__(self, channels: int, heads: int, context_dim: Optional[int] = None, ff_mult: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = Attention(channels, heads)
        if context_dim is not None:
            self.norm2 = nn.LayerNorm(channels)
            self.attn2 = Attention(channels, heads, context_dim=context_dim)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = nn.LayerNorm(channels)
        self.ff_in = nn.Linear(channels, ff_mult * channels)
        self.ff_out = nn.Linear(ff_mult * channels, channels)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        attn_bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        x = hidden_states.flatten(2).transpose(1, 2)  # (B, HW, C), a view
        x = x + self.attn1(self.norm1(x))
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), context, attn_bias)
        x = x + self.ff_out(F.gelu(self.ff_in(self.norm3(x))))
        return x.transpose(1, 2).reshape(batch, channels, height, width)  # (B, C, H, W)


class CrossAttentionBlock(nn.Module):
    r"""Text conditioning alone on a feature map: pre-LayerNorm cross-attention with a residual, no self-attention
    and no MLP. About a tenth of a ``TransformerBlock``'s FLOPs at 16x16 (the self-attention over 256 tokens and
    the MLP are what cost), so the highest-resolution level can read the prompt for small details.

    Args:
        channels (`int`): Channels C of the feature map.
        heads (`int`): Attention heads.
        context_dim (`int`): Text embedding width.
    """

    def __init__(self, channels: int, heads: int, context_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = Attention(channels, heads, context_dim=context_dim)

    def forward(
        self, hidden_states: torch.Tensor, context: torch.Tensor, attn_bias: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        x = hidden_states.flatten(2).transpose(1, 2)  # (B, HW, C), a view
        x = x + self.attn(self.norm(x), context, attn_bias)
        return x.transpose(1, 2).reshape(batch, channels, height, width)  # (B, C, H, W)


class UNetLevel(nn.Module):
    r"""One resolution of the UNet, down or up path: resnets (each optionally followed by a transformer block),
    then a resampler that also changes the channels to the next level's (so every skip at a level has the
    level's width, for both ``"concat"`` and ``"add"`` skip connections).

    Args:
        channels (`int`): Channels of this level.
        num_layers (`int`): Resnet (+ transformer) layers.
        temb_channels (`int`): Time embedding width.
        heads (`int`, *optional*): Attention heads; `None` = no transformer blocks at this level.
        cross_attention_only (`bool`, defaults to `False`): With ``heads``, a ``CrossAttentionBlock`` (text
            only) after each resnet instead of a full ``TransformerBlock``.
        context_dim (`int`, *optional*): Text width for cross-attention.
        up (`bool`): Up path: each layer first merges one skip (``skip_connection``), ends with an Upsample.
        next_channels (`int`, *optional*): Channels of the next level; `None` = no resampler (last level).
        skip_connection (`str`): ``"concat"`` or ``"add"`` (up path only).
        norm_num_groups (`int`), dropout (`float`): For the resnets.
    """

    def __init__(
        self,
        channels: int,
        num_layers: int,
        temb_channels: int,
        heads: Optional[int] = None,
        context_dim: Optional[int] = None,
        cross_attention_only: bool = False,
        up: bool = False,
        next_channels: Optional[int] = None,
        skip_connection: str = "concat",
        norm_num_groups: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.up = up
        self.skip_connection = skip_connection
        in_channels = 2 * channels if up and skip_connection == "concat" else channels
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels, channels, temb_channels, norm_num_groups, dropout) for _ in range(num_layers)
        )
        if heads is None:
            self.attentions = None
        elif cross_attention_only:
            self.attentions = nn.ModuleList(
                CrossAttentionBlock(channels, heads, context_dim) for _ in range(num_layers)
            )
        else:
            self.attentions = nn.ModuleList(TransformerBlock(channels, heads, context_dim) for _ in range(num_layers))
        if next_channels is None:
            self.resampler = None
        elif up:
            self.resampler = Upsample(channels, next_channels)
        else:
            self.resampler = Downsample(channels, next_channels)
        self.gradient_checkpointing = False

    def _call(self, module: nn.Module, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        skips: tuple[torch.Tensor, ...] = (),
        context: Optional[torch.Tensor] = None,
        attn_bias: Optional[torch.Tensor] = None,
    ):
        """Down path: returns ``(hidden_states, skips)``, one skip per layer and one after the resampler. Up path:
        ``skips`` holds this level's ``num_layers`` skips in the order the down path made them; the first layer
        merges the last one. Returns ``hidden_states``.

        Skips go in and out as values, never by changing a list in place: hooks that move a module's inputs
        (accelerate's ``device_map`` dispatch and disk offload, diffusers' ``enable_group_offload``) hand it a
        copy of its arguments, so a list appended to or popped inside the level would be lost.
        """
        if self.up and len(skips) != len(self.resnets):
            raise ValueError(
                f"An up level of {len(self.resnets)} layers needs {len(self.resnets)} skips, got {len(skips)}."
            )
        new_skips = []
        for i, resnet in enumerate(self.resnets):
            if self.up:
                skip = skips[len(skips) - 1 - i]
                if self.skip_connection == "concat":
                    hidden_states = torch.cat([hidden_states, skip], dim=1)  # (B, 2C, H, W)
                else:
                    hidden_states = hidden_states + skip
            hidden_states = self._call(resnet, hidden_states, temb)
            if self.attentions is not None:
                hidden_states = self._call(self.attentions[i], hidden_states, context, attn_bias)
            if not self.up:
                new_skips.append(hidden_states)
        if self.resampler is not None:
            hidden_states = self.resampler(hidden_states)
            if not self.up:
                new_skips.append(hidden_states)
        if self.up:
            return hidden_states
        return hidden_states, tuple(new_skips)


class MidBlock(nn.Module):
    """Resnet -> transformer block -> resnet at the lowest resolution."""

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        heads: int,
        context_dim: Optional[int] = None,
        norm_num_groups: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(channels, channels, temb_channels, norm_num_groups, dropout) for _ in range(2)
        )
        self.attention = TransformerBlock(channels, heads, context_dim)
        self.gradient_checkpointing = False

    _call = UNetLevel._call

    def forward(self, hidden_states, temb, context=None, attn_bias=None):
        hidden_states = self._call(self.resnets[0], hidden_states, temb)
        hidden_states = self._call(self.attention, hidden_states, context, attn_bias)
        return self._call(self.resnets[1], hidden_states, temb)
