"""SmallVAE: a from-scratch KL autoencoder that plugs in wherever diffusers' `AutoencoderKL` does.

Image `(batch, in_channels, H, W)` in [-1, 1] -> encoder -> `quant_conv` -> (mean, logvar)
`(batch, 2 * latent_channels, H / f, W / f)` -> `DiagonalGaussianDistribution` -> latent `z`
-> `post_quant_conv` -> decoder -> image `(batch, out_channels, H, W)`, with `f = downsample_factor`
`= 2 ** (len(block_out_channels) - 1)`. Latents for the UNet are `latent_dist.sample() * scaling_factor`.

Conv-heavy for CPU speed: self-attention appears once per side, in the mid block at the lowest resolution.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from .layers import (
    Downsample,
    QuietDtypeCastMixin,
    ResnetBlock,
    SpatialSelfAttention,
    Upsample,
    check_block_out_channels,
    check_positive_int,
    group_norm,
)


class _CheckpointedStack(nn.Module):
    """Runs blocks under gradient checkpointing when `ModelMixin.enable_gradient_checkpointing()` asked for it.

    `ModelMixin._set_gradient_checkpointing` finds every submodule with a `gradient_checkpointing` attribute and
    sets it together with `_gradient_checkpointing_func` (diffusers >= 0.32 mechanism).
    """

    def __init__(self):
        super().__init__()
        self.gradient_checkpointing = False

    def _run(self, block: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, hidden_states)
        return block(hidden_states)


class MidBlock(nn.Module):
    """ResnetBlock -> (SpatialSelfAttention) -> ResnetBlock at the lowest resolution; shape-preserving."""

    def __init__(self, channels: int, norm_num_groups: int, add_attention: bool = True):
        super().__init__()
        self.resnet_1 = ResnetBlock(channels, channels, norm_num_groups=norm_num_groups)
        self.attention = SpatialSelfAttention(channels, norm_num_groups) if add_attention else None
        self.resnet_2 = ResnetBlock(channels, channels, norm_num_groups=norm_num_groups)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.resnet_1(hidden_states)
        if self.attention is not None:
            hidden_states = self.attention(hidden_states)
        return self.resnet_2(hidden_states)


class ResnetStage(nn.Module):
    """`num_layers` ResnetBlocks (first one `in_channels -> out_channels`), then an optional 2x down/up sampler."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, norm_num_groups: int, resample=None):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, norm_num_groups=norm_num_groups)
            for i in range(num_layers)
        )
        self.resampler = resample(out_channels) if resample is not None else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states)
        if self.resampler is not None:
            hidden_states = self.resampler(hidden_states)
        return hidden_states


class Encoder(_CheckpointedStack):
    """`(B, in_channels, H, W)` -> `(B, 2 * latent_channels, H / f, W / f)` (before `quant_conv`)."""

    def __init__(self, in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups, attn):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        last = len(block_out_channels) - 1
        self.down_blocks = nn.ModuleList(
            ResnetStage(
                block_out_channels[max(i - 1, 0)],
                channels,
                layers_per_block,
                norm_num_groups,
                resample=Downsample if i < last else None,
            )
            for i, channels in enumerate(block_out_channels)
        )
        self.mid_block = MidBlock(block_out_channels[-1], norm_num_groups, add_attention=attn)
        self.conv_norm_out = group_norm(block_out_channels[-1], norm_num_groups)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * latent_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        sample = self.conv_in(sample)  # (B, C0, H, W)
        for down_block in self.down_blocks:
            sample = self._run(down_block, sample)  # halves H, W except after the last block
        sample = self._run(self.mid_block, sample)  # (B, C_last, H / f, W / f)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))  # (B, 2 * latent, H / f, W / f)


class Decoder(_CheckpointedStack):
    """`(B, latent_channels, h, w)` (after `post_quant_conv`) -> `(B, out_channels, h * f, w * f)`.

    As in diffusers, each up block has `layers_per_block + 1` ResnetBlocks: decoding is the harder direction.
    """

    def __init__(self, latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups, attn):
        super().__init__()
        reversed_channels = list(reversed(block_out_channels))
        last = len(reversed_channels) - 1
        self.conv_in = nn.Conv2d(latent_channels, reversed_channels[0], kernel_size=3, padding=1)
        self.mid_block = MidBlock(reversed_channels[0], norm_num_groups, add_attention=attn)
        self.up_blocks = nn.ModuleList(
            ResnetStage(
                reversed_channels[max(i - 1, 0)],
                channels,
                layers_per_block + 1,
                norm_num_groups,
                resample=Upsample if i < last else None,
            )
            for i, channels in enumerate(reversed_channels)
        )
        self.conv_norm_out = group_norm(block_out_channels[0], norm_num_groups)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        sample = self.conv_in(sample)  # (B, C_last, h, w)
        sample = self._run(self.mid_block, sample)
        for up_block in self.up_blocks:
            sample = self._run(up_block, sample)  # doubles h, w except after the last block
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))  # (B, out_channels, h * f, w * f)


class SmallVAE(QuietDtypeCastMixin, ModelMixin, AutoencoderMixin, ConfigMixin):
    r"""A small KL-regularised autoencoder with the interface of diffusers' [`AutoencoderKL`].

    Args:
        in_channels (`int`, defaults to 3): Channels of the input image.
        out_channels (`int`, defaults to 3): Channels of the decoded image.
        block_out_channels (`tuple[int, ...]`, defaults to `(32, 64, 128)`): Width of each resolution level; there
            are `len(block_out_channels) - 1` downsamplings, so the downsampling factor is
            `2 ** (len(block_out_channels) - 1)` (4 by default: 64x64 images -> 16x16 latents).
        layers_per_block (`int`, defaults to 1): ResnetBlocks per encoder level (the decoder has one more).
        latent_channels (`int`, defaults to 4): Channels of the latent.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups; must divide every width at least as large, else
            ``ValueError`` as in diffusers; a narrower layer (tiny configs) normalises each channel on its own.
        sample_size (`int`, defaults to 64): Image size the model is trained for; must be divisible by the factor.
        scaling_factor (`float`, defaults to 1.0): Latents are multiplied by it before the diffusion model and
            divided by it before decoding. Training sets it to `1 / std(latents)` (see the latent diffusion paper,
            sections 4.3.2 and D.1).
        force_upcast (`bool`, defaults to `False`): As in `AutoencoderKL`: `CartoonFacePipeline` runs this VAE in
            float32 when it is stored in float16 (as `StableDiffusionXLPipeline` does).
        mid_block_add_attention (`bool`, defaults to `True`): Self-attention in the encoder and decoder mid blocks.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResnetBlock", "SpatialSelfAttention"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 64,
        scaling_factor: float = 1.0,
        force_upcast: bool = False,
        mid_block_add_attention: bool = True,
    ):
        super().__init__()
        check_block_out_channels(block_out_channels)
        positive_ints = (
            ("layers_per_block", layers_per_block),
            ("sample_size", sample_size),
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("latent_channels", latent_channels),
        )
        for key, value in positive_ints:
            check_positive_int(value, key)
        for key, value in (("force_upcast", force_upcast), ("mid_block_add_attention", mid_block_add_attention)):
            if not isinstance(value, bool):
                raise ValueError(f"`{key}` must be True or False, got {value!r}.")
        if (
            not isinstance(scaling_factor, (int, float))
            or isinstance(scaling_factor, bool)
            or not math.isfinite(scaling_factor)
        ):
            raise ValueError(
                f"`scaling_factor` must be a positive number (a Python int or float), got {scaling_factor!r}."
            )
        if sample_size % self.downsample_factor != 0:
            raise ValueError(
                f"`sample_size` must be divisible by the downsampling factor {self.downsample_factor} "
                f"(= 2 ** (len(block_out_channels) - 1)), got {sample_size}."
            )
        if scaling_factor <= 0:
            raise ValueError(f"`scaling_factor` must be positive, got {scaling_factor}.")
        args = (block_out_channels, layers_per_block, norm_num_groups, mid_block_add_attention)
        self.encoder = Encoder(in_channels, latent_channels, *args)
        self.decoder = Decoder(latent_channels, out_channels, *args)
        # 1x1 convs as in AutoencoderKL: (mean, logvar) moments and their inverse map into the decoder.
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, kernel_size=1)
        self.use_slicing = False  # toggled by AutoencoderMixin.enable_slicing() / disable_slicing()
        self.use_tiling = False  # always: see enable_tiling

    def enable_tiling(self, *args, **kwargs) -> None:
        """Raises `NotImplementedError`: SmallVAE has no tiled encode / decode (images go through in one pass).

        `AutoencoderMixin.enable_tiling` raises only while `use_tiling` is unset, so after `disable_tiling()` it
        would set the flag and be silently ignored. `enable_slicing()` saves memory on batches."""
        raise NotImplementedError(
            "SmallVAE has no tiled encode / decode (`enable_tiling`): images are encoded and decoded in one pass. "
            "`enable_slicing()` encodes and decodes a batch one image at a time."
        )

    @property
    def downsample_factor(self) -> int:
        """Image size / latent size, `2 ** (len(block_out_channels) - 1)`: the one place it is computed."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        """Latent height and width for images of `config.sample_size`."""
        return self.config.sample_size // self.downsample_factor

    def _check_input(self, tensor, name: str, channels: int, channels_key: str, divisible: bool) -> None:
        """Raise before any computation when `tensor` cannot go through the model."""
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}.")
        if tensor.ndim != 4:
            raise ValueError(
                f"`{name}` must have shape (batch, channels, height, width), got {tuple(tensor.shape)} "
                f"({tensor.ndim} dimensions)."
            )
        if tensor.shape[1] != channels:
            raise ValueError(
                f"`{name}` has {tensor.shape[1]} channels (shape {tuple(tensor.shape)}) but this model expects "
                f"{channels} (config.{channels_key})."
            )
        factor = self.downsample_factor
        if divisible and (tensor.shape[2] % factor or tensor.shape[3] % factor):
            raise ValueError(
                f"`{name}` height and width must be divisible by the downsampling factor {factor}, "
                f"got {tensor.shape[2]}x{tensor.shape[3]} (shape {tuple(tensor.shape)})."
            )

    @apply_forward_hook
    def encode(
        self, x: torch.Tensor, return_dict: bool = True
    ) -> Union[AutoencoderKLOutput, tuple[DiagonalGaussianDistribution]]:
        """Encode a batch of images into a latent distribution.

        Args:
            x (`torch.Tensor`): Images `(batch, in_channels, height, width)` in [-1, 1], height and width divisible
                by `downsample_factor`.
            return_dict (`bool`, defaults to `True`): Return an `AutoencoderKLOutput` instead of a tuple.

        Returns:
            `AutoencoderKLOutput` or `tuple`: `latent_dist`, a `DiagonalGaussianDistribution` over latents
            `(batch, latent_channels, height / f, width / f)`.
        """
        self._check_input(x, "x", self.config.in_channels, "in_channels", divisible=True)
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self.quant_conv(self.encoder(x_slice)) for x_slice in x.split(1)])
        else:
            moments = self.quant_conv(self.encoder(x))  # (B, 2 * latent, h, w): mean and logvar
        posterior = DiagonalGaussianDistribution(moments)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    @apply_forward_hook
    def decode(
        self, z: torch.Tensor, return_dict: bool = True, generator: Optional[torch.Generator] = None
    ) -> Union[DecoderOutput, tuple[torch.Tensor]]:
        """Decode a batch of latents into images.

        Args:
            z (`torch.Tensor`): Latents `(batch, latent_channels, h, w)`, unscaled (divide by `scaling_factor`).
            return_dict (`bool`, defaults to `True`): Return a `DecoderOutput` instead of a tuple.
            generator (`torch.Generator`, *optional*): Unused; accepted for `AutoencoderKL` compatibility.

        Returns:
            `DecoderOutput` or `tuple`: `sample`, images `(batch, out_channels, h * f, w * f)`, roughly in [-1, 1].
        """
        self._check_input(z, "z", self.config.latent_channels, "latent_channels", divisible=False)
        if self.use_slicing and z.shape[0] > 1:
            decoded = torch.cat([self.decoder(self.post_quant_conv(z_slice)) for z_slice in z.split(1)])
        else:
            decoded = self.decoder(self.post_quant_conv(z))
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> Union[DecoderOutput, tuple[torch.Tensor]]:
        """Reconstruct images: encode, take the posterior mode (or a sample), decode.

        Args:
            sample (`torch.Tensor`): Images `(batch, in_channels, height, width)` in [-1, 1].
            sample_posterior (`bool`, defaults to `False`): Sample the posterior instead of taking its mode.
            return_dict (`bool`, defaults to `True`): Return a `DecoderOutput` instead of a tuple.
            generator (`torch.Generator`, *optional*): Makes posterior sampling deterministic.

        Returns:
            `DecoderOutput` or `tuple`: `sample`, the reconstruction, same shape as the input.
        """
        self._check_input(sample, "sample", self.config.in_channels, "in_channels", divisible=True)
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        decoded = self.decode(z).sample
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)
