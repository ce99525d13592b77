"""Image reconstruction metrics: MSE, PSNR, SSIM, MS-SSIM, and a VAE round trip on held-out images.

Every function takes images as tensors of shape `(batch, channels, height, width)` in the library's range
[-1, 1], or uint8 in [0, 255] (`value_range` changes that; float pixels clearly outside it raise a ValueError)
and maps them to [0, 1] before measuring, so that the numbers are the
usual ones computed on [0, 1] (or [0, 255]) pixels: PSNR with a peak of 1, SSIM with `L = 1`.

SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
structural similarity" (IEEE TIP 2004): an 11x11 Gaussian window with sigma 1.5, `K1 = 0.01`, `K2 = 0.03`,
local statistics over the *valid* part of the image (no padding), averaged over pixels and then channels
(the same numbers as `skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`).

MS-SSIM follows Wang, Simoncelli & Bovik, "Multi-scale structural similarity for image quality assessment"
(Asilomar 2003) with its five weights, as `pytorch_msssim.ms_ssim` computes it. Five scales need images of at
least 161 pixels with an 11-pixel window (the coarsest scale, ceil(161 / 16) = 11 pixels, must hold one);
smaller images use as many scales as fit (64x64 -> 3 scales: 64, 32, 16) with the first weights
renormalised to sum to 1, and `ms_ssim` returns `None` below 2 scales (where it would equal SSIM).
Numbers with fewer than five scales are therefore not comparable with five-scale MS-SSIM from papers.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


UINT8_RANGE = (0.0, 255.0)
# How far (a share of the range's width) float pixels may stray outside `value_range` before it is an error.
RANGE_TOLERANCE = 1e-3


def _to_unit_range(images: torch.Tensor, value_range: Optional[tuple[float, float]]) -> torch.Tensor:
    """`images` mapped from `value_range` to [0, 1]; `None`: [0, 255] for uint8 and [-1, 1] for floats (the
    library's range), as skimage infers `data_range=255` for uint8. Raises for a degenerate range and for pixels
    clearly outside it (e.g. [0, 255] floats read as [-1, 1])."""
    if value_range is None:
        value_range = UINT8_RANGE if images.dtype == torch.uint8 else (-1.0, 1.0)
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be a pair of numbers (low, high), got {value_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"value_range must be two finite numbers with low < high, got {value_range!r}")
    if images.numel():
        if images.is_floating_point() and images.isnan().any():  # NaN compares False with any bound: NaN metrics
            raise ValueError("pixel values hold NaN")
        tolerance = RANGE_TOLERANCE * (high - low)
        found_low, found_high = images.min().item(), images.max().item()
        if found_low < low - tolerance or found_high > high + tolerance:
            raise ValueError(
                f"pixel values span [{found_low:g}, {found_high:g}], outside value_range=({low:g}, {high:g}); pass "
                "the range the images are in (uint8 images are read as (0, 255) by default)"
            )
    return (images.float() - low) / (high - low)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"expected two image batches of the same shape (batch, channels, height, width), got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )


def mse(x: torch.Tensor, y: torch.Tensor, value_range: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """Mean squared error per image, on pixels mapped to [0, 1]. Returns shape `(batch,)`.

    Args:
        x, y (`torch.Tensor`): Image batches `(batch, channels, height, width)` in `value_range`.
        value_range (`tuple[float, float]`, *optional*): Range of the input pixels; defaults to (0, 255) for uint8
            images and (-1, 1) (the library's range) for float ones. Float pixels clearly outside it raise.
    """
    _check_pair(x, y)
    diff = _to_unit_range(x, value_range) - _to_unit_range(y, value_range)
    return diff.pow(2).flatten(1).mean(dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor, value_range: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, `10 * log10(1 / MSE)` on [0, 1] pixels. Returns `(batch,)`.

    Identical images give `inf`. `value_range` as in `mse` (uint8 images: (0, 255), floats: (-1, 1)).
    """
    return 10.0 * torch.log10(1.0 / mse(x, y, value_range))


def gaussian_window(window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of `window_size` taps (the separable factor of the 2-D SSIM window)."""
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size}")
    coords = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def _filter_valid(images: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, 'valid' region only: (B, C, H, W) -> (B, C, H-k+1, W-k+1)."""
    channels = images.shape[1]
    k = window.numel()
    horizontal = window.view(1, 1, 1, k).repeat(channels, 1, 1, 1)
    vertical = window.view(1, 1, k, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(images, horizontal, groups=channels)
    return F.conv2d(out, vertical, groups=channels)


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, k1: float, k2: float):
    """Per-channel SSIM and contrast-structure term for [0, 1] images: two tensors of shape (B, C)."""
    c1, c2 = k1**2, k2**2  # (K * L)^2 with L = 1
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    # Local (biased, population) variances and covariance, as Wang et al. 2004.
    sigma_xx = _filter_valid(x * x, window) - mu_x**2
    sigma_yy = _filter_valid(y * y, window) - mu_y**2
    sigma_xy = _filter_valid(x * y, window) - mu_x * mu_y
    cs_map = (2 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)  # contrast * structure
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs_map).mean(dim=(2, 3)), cs_map.mean(dim=(2, 3))


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    value_range: Optional[tuple[float, float]] = None,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), averaged over channels. Returns shape `(batch,)`.

    Args:
        x, y (`torch.Tensor`): Image batches `(batch, channels, height, width)` in `value_range`.
        value_range (`tuple[float, float]`, *optional*): Range of the input pixels; defaults to (0, 255) for
            uint8 images and (-1, 1) for float ones (see `mse`).
        window_size (`int`, defaults to 11): Side of the Gaussian window; images must be at least this big.
        sigma (`float`, defaults to 1.5): Standard deviation of the Gaussian window.
        k1, k2 (`float`): Stabilising constants of the paper.
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"SSIM with window_size={window_size} needs images at least that big, got {tuple(x.shape)}")
    window = gaussian_window(window_size, sigma).to(device=x.device, dtype=torch.float64)
    x64 = _to_unit_range(x, value_range).double()
    y64 = _to_unit_range(y, value_range).double()
    ssim_per_channel, _ = _ssim_and_cs(x64, y64, window, k1, k2)
    return ssim_per_channel.mean(dim=1).float()


def ms_ssim_num_scales(size: int, window_size: int = 11, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many MS-SSIM scales fit an image whose smaller side is `size` (the coarsest must hold one window)."""
    scales = 0
    # The downsampling pads odd sizes, so scale k has ceil(size / 2**k) pixels.
    while scales < max_scales and -(-size // 2**scales) >= window_size:
        scales += 1
    return scales


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    value_range: Optional[tuple[float, float]] = None,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Optional[torch.Tensor]:
    """Multi-scale SSIM per image (Wang et al. 2003), or `None` when fewer than 2 scales fit. Shape `(batch,)`.

    Uses `ms_ssim_num_scales(min(height, width))` scales with the first MS-SSIM weights renormalised to sum to
    1 (all five for images of 161 pixels or more). Negative contrast-structure terms are clamped to 0 before
    the weighted geometric mean, as common implementations do. `value_range` as in `mse` (uint8: (0, 255),
    floats: (-1, 1)).
    """
    _check_pair(x, y)
    num_scales = ms_ssim_num_scales(min(x.shape[-2:]), window_size)
    if num_scales < 2:
        return None
    weights = torch.tensor(MS_SSIM_WEIGHTS[:num_scales], dtype=torch.float64, device=x.device)
    weights = weights / weights.sum()
    window = gaussian_window(window_size, sigma).to(device=x.device, dtype=torch.float64)
    x64 = _to_unit_range(x, value_range).double()
    y64 = _to_unit_range(y, value_range).double()
    terms = []
    for scale in range(num_scales):
        ssim_per_channel, cs_per_channel = _ssim_and_cs(x64, y64, window, k1, k2)
        if scale < num_scales - 1:
            terms.append(cs_per_channel.clamp(min=0))
            # Downsample by 2 (average pooling, padding odd sizes) for the next, coarser scale.
            padding = (x64.shape[-2] % 2, x64.shape[-1] % 2)
            x64 = F.avg_pool2d(x64, kernel_size=2, padding=padding)
            y64 = F.avg_pool2d(y64, kernel_size=2, padding=padding)
        else:
            terms.append(ssim_per_channel.clamp(min=0))
    stacked = torch.stack(terms, dim=0)  # (scales, B, C)
    per_channel = torch.prod(stacked ** weights.view(-1, 1, 1), dim=0)  # (B, C)
    return per_channel.mean(dim=1).float()


def _reconstruct(vae, images: torch.Tensor, sample_posterior: bool, generator) -> torch.Tensor:
    posterior = vae.encode(images).latent_dist
    latents = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
    return vae.decode(latents).sample


@torch.no_grad()
def reconstruct_images(
    vae,
    images: torch.Tensor,
    batch_size: int = 32,
    sample_posterior: bool = False,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Encode and decode `images` `(N, C, H, W)` in [-1, 1] with an `AutoencoderKL`-like `vae`, by batches.

    Returns the reconstructions clamped to [-1, 1], same shape, on the input's device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    param = next(vae.parameters())
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device=param.device, dtype=param.dtype)
        outputs.append(_reconstruct(vae, batch, sample_posterior, generator).float().clamp(-1, 1).to(images.device))
    return torch.cat(outputs)


def reconstruction_metrics(reconstructions: torch.Tensor, images: torch.Tensor) -> dict:
    """MSE, PSNR, SSIM and MS-SSIM between two batches in [-1, 1], averaged over images (JSON-able dict).

    `ssim` is `None` for images smaller than SSIM's 11-pixel window (8x8 digits), as `ms_ssim` is below 2 scales.
    """
    per_image_psnr = psnr(reconstructions, images)
    ms = ms_ssim(reconstructions, images)
    mean_mse = mse(reconstructions, images).mean().item()
    fits_window = min(images.shape[-2:]) >= 11
    return {
        "num_images": int(images.shape[0]),
        "mse": mean_mse,  # on [0, 1] pixels
        "psnr": per_image_psnr.mean().item(),  # mean of per-image PSNR, dB
        "psnr_of_mean_mse": 10 * math.log10(1 / mean_mse) if mean_mse > 0 else math.inf,
        "ssim": ssim(reconstructions, images).mean().item() if fits_window else None,
        "ms_ssim": None if ms is None else ms.mean().item(),
        "ms_ssim_scales": ms_ssim_num_scales(min(images.shape[-2:])),
    }


def evaluate_reconstruction(
    vae,
    images: torch.Tensor,
    batch_size: int = 32,
    sample_posterior: bool = False,
    generator: Optional[torch.Generator] = None,
) -> dict:
    """Reconstruction quality of a VAE on held-out images.

    Args:
        vae: An `AutoencoderKL`-compatible model (`encode(x).latent_dist`, `decode(z).sample`).
        images (`torch.Tensor`): Held-out images `(N, C, H, W)` in [-1, 1].
        batch_size (`int`, defaults to 32): Images per forward pass.
        sample_posterior (`bool`, defaults to `False`): Decode a posterior sample instead of its mode (mean).
        generator (`torch.Generator`, *optional*): Used when `sample_posterior=True`.

    Returns:
        `dict`: `num_images`, `mse` (on [0, 1] pixels), `psnr` (dB, mean over images), `psnr_of_mean_mse`,
        `ssim` (`None` for images smaller than 11 pixels), `ms_ssim` (`None` when the images are too small for 2
        scales) and `ms_ssim_scales`.
    """
    reconstructions = reconstruct_images(vae, images, batch_size, sample_posterior, generator)
    return reconstruction_metrics(reconstructions, images)


def similarity_text(value: Optional[float]) -> str:
    """SSIM / MS-SSIM for a summary line: "n/a" where the images are too small for them (`None`)."""
    return "n/a" if value is None else f"{value:.4f}"
