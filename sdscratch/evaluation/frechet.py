"""Frechet distance between two sets of feature vectors (the formula behind FID).

FID (Heusel et al., "GANs trained by a two time-scale update rule converge to a local Nash equilibrium",
NeurIPS 2017) fits a Gaussian to the Inception-v3 pool features of each image set and measures

    d^2 = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2)).

Inception weights are a download and cannot be fetched here, so sdscratch applies the same formula to the
penultimate features of its own small classifiers (`sdscratch.evaluation.classifier`): a "Frechet
classifier distance". Its numbers are on a different scale from FID and only comparable between runs that
use the same classifier weights and the same number of images (the estimate is biased upwards for small
sets: always read it beside its floor, the distance between two disjoint real sets of the same size).
The matrix square root follows pytorch-fid's `calculate_frechet_distance` (scipy `sqrtm`, with a small
diagonal offset when the product is singular).
"""

from __future__ import annotations

import numpy as np
import torch


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean `(dim,)` and covariance `(dim, dim)` (unbiased, float64) of `features` `(num_samples, dim)`."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (num_samples >= 2, dim), got {features.shape}")
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise ValueError(f"features of {bad} of {features.shape[0]} samples are NaN or infinite")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2 (`np.ndarray`): Means, shape `(dim,)`.
        sigma1, sigma2 (`np.ndarray`): Covariances, shape `(dim, dim)`.
        eps (`float`, defaults to 1e-6): Diagonal offset added when `sigma1 @ sigma2` is singular.

    Returns:
        `float`: the squared Frechet (2-Wasserstein) distance, >= 0 up to rounding.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics of different sizes: {mu1.shape} vs {mu2.shape}, {sigma1.shape} vs {sigma2.shape}"
        )
    if mu1.ndim != 1 or sigma1.shape != (mu1.shape[0], mu1.shape[0]):  # a 3-d mean with 4x4 covariances read 0.0
        raise ValueError(f"means must be (dim,) and covariances (dim, dim), got {mu1.shape} and {sigma1.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):  # max(nan, 0.0) returned nan
        raise ValueError("the statistics hold NaN or infinite values")
    from scipy import linalg  # imported here: scipy is slow to import and only this function needs it

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    # Rounding can leave a tiny imaginary part in the square root of a (mathematically) PSD product.
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    distance = diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(max(distance, 0.0))


def frechet_distance_from_features(features1, features2) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets `(n1, dim)` and `(n2, dim)`."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
