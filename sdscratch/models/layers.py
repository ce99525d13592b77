"""Building blocks shared by :class:`~sdscratch.SmallVAE` and :class:`~sdscratch.SmallUNet`.

Every block uses named submodules (never positional ``nn.Sequential``) so that checkpoints survive edits.
Shapes are ``(batch, channels, height, width)`` unless stated otherwise.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.utils import logging as diffusers_logging
from torch import nn


class _DropEmptyFp32ModulesWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "that should be kept in float32: []." not in record.getMessage()


class QuietDtypeCastMixin:
    """`ModelMixin.to(dtype)` without diffusers 0.42's bogus warning "There are modules in X that should be kept in
    float32: []" (it warns on every dtype cast, even when `_keep_in_fp32_modules` lists none: `pipe.to(torch.bfloat16)`
    printed it once per model). A model that lists fp32 modules still gets the warning."""

    def to(self, *args, **kwargs):
        if getattr(self, "_keep_in_fp32_modules", None):
            return super().to(*args, **kwargs)
        modeling_logger = diffusers_logging.get_logger("diffusers.models.modeling_utils")
        quiet = _DropEmptyFp32ModulesWarning()
        modeling_logger.addFilter(quiet)
        try:
            return super().to(*args, **kwargs)
        finally:
            modeling_logger.removeFilter(quiet)


def check_positive_int(value, name: str, alternative: str = "") -> None:
    """Raises a `ValueError` naming config key `name` unless `value` is an int >= 1 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int{' ' + alternative if alternative else ''}, got {value!r}.")


def check_block_out_channels(block_out_channels) -> None:
    """Raises a `ValueError` unless `block_out_channels` is a non-empty list / tuple of positive ints."""
    if (
        not isinstance(block_out_channels, (list, tuple))
        or len(block_out_channels) < 1
        or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in block_out_channels)
    ):
        raise ValueError(
            f"`block_out_channels` must be one or more positive channel counts, got {block_out_channels!r}."
        )


def group_norm(num_channels: int, num_groups: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm over ``num_channels`` in ``num_groups`` groups (the models' ``norm_num_groups``).

    A feature map narrower than ``num_groups`` (tiny test configs, e.g. 8 or 16 channels under the default 32)
    normalises each channel on its own (``num_channels`` groups). Otherwise ``num_groups`` must divide
    ``num_channels``, else ``ValueError``, as in diffusers' models: never another grouping than the config says.
    """
    if not isinstance(num_groups, int) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f"`norm_num_groups` must be a positive int, got {num_groups!r}.")
    if num_channels < num_groups:
        num_groups = num_channels
    elif num_channels % num_groups:
        raise ValueError(
            f"`norm_num_groups`={num_groups} must divide the channels of every normalised feature map at least as "
            f"wide, got one of {num_channels} channels: choose `block_out_channels` and `norm_num_groups` to fit."
        )
    return nn.GroupNorm(num_groups, num_channels, eps=eps, affine=True)


class ResnetBlock(nn.Module):
    r"""Residual block: GroupNorm -> SiLU -> conv, (+ time embedding), GroupNorm -> SiLU -> dropout -> conv, + skip.

    Args:
        in_channels (`int`): Input channels.
        out_channels (`int`, *optional*): Output channels; defaults to `in_channels`.
        temb_channels (`int`, *optional*): Width of the time embedding; `None` means the block takes none (VAE).
        norm_num_groups (`int`, defaults to 32): Groups of the GroupNorm layers.
        dropout (`float`, defaults to 0.0): Dropout before the second convolution.
        eps (`float`, defaults to 1e-6): GroupNorm epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Optional[int] = None,
        temb_channels: Optional[int] = None,
        norm_num_groups: int = 32,
        dropout: float = 0.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = group_norm(in_channels, norm_num_groups, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels is not None else None
        self.norm2 = group_norm(out_channels, norm_num_groups, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, hidden_states: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.conv1(F.silu(self.norm1(hidden_states)))
        if self.time_emb_proj is not None and temb is not None:
            # (B, C) -> (B, C, 1, 1): the same shift for every pixel of a sample
            hidden_states = hidden_states + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        hidden_states = self.conv2(self.dropout(F.silu(self.norm2(hidden_states))))
        if self.conv_shortcut is not None:
            residual = self.conv_shortcut(residual)
        return residual + hidden_states


class Downsample(nn.Module):
    """Halves height and width with a stride-2 3x3 convolution."""

    def __init__(self, channels: int, out_channels: Optional[int] = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, kernel_size=3, stride=2, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(hidden_states)


class Upsample(nn.Module):
    """Doubles height and width (nearest neighbour), then a 3x3 convolution."""

    def __init__(self, channels: int, out_channels: Optional[int] = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map (the VAE mid block), with a residual.

    Uses a fused QKV projection and ``F.scaled_dot_product_attention``.
    """

    def __init__(self, channels: int, norm_num_groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.group_norm = group_norm(channels, norm_num_groups, eps)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        residual = hidden_states
        x = self.group_norm(hidden_states).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.to_qkv(x).unsqueeze(1).chunk(3, dim=-1)  # 3 x (B, 1, HW, C)
        x = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B, HW, C)
        x = self.to_out(x).transpose(1, 2).reshape(batch, channels, height, width)
        return residual + x
