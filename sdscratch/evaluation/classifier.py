"""A small multi-head image classifier: reads named attributes back from generated images.

One convolutional trunk, one softmax head per attribute (`labels` maps each attribute to its value names).
Used twice: on 64x64 cartoon faces (one head per attribute of `sdscratch.data.cartoon_faces.ATTRIBUTES`) and
on 16x16 digits (one head, "digit"). Its pooled penultimate features feed the Frechet distance
(`sdscratch.evaluation.frechet`). Trained by `training/train_classifier.py`; the trained weights ship with
the package (`load_classifier("cartoon-faces")`, `load_classifier("digits")`).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
TASKS = ("cartoon-faces", "digits")


@dataclass
class AttributeClassifierOutput(BaseOutput):
    """
    Args:
        logits (`dict[str, torch.Tensor]`): Per attribute, unnormalised scores `(batch, num_values)`.
        features (`torch.Tensor`): Pooled penultimate features `(batch, block_out_channels[-1])`.
    """

    logits: dict
    features: torch.Tensor


class ClassifierBlock(nn.Module):
    """Strided 3x3 conv (halves the size) -> BN -> SiLU -> 3x3 conv -> BN -> SiLU, with a residual on the 2nd."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_down = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm_down = nn.BatchNorm2d(out_channels)
        self.conv = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.silu(self.norm_down(self.conv_down(hidden_states)))  # (B, C_out, H/2, W/2)
        return F.silu(hidden_states + self.norm(self.conv(hidden_states)))


class AttributeClassifier(ModelMixin, ConfigMixin):
    r"""Convolutional classifier with one softmax head per attribute.

    Args:
        labels (`dict[str, list[str]]`): Attribute name -> value names; head `name` predicts an index into
            `labels[name]`. Required.
        in_channels (`int`, defaults to 3): Image channels (3 for faces, 1 for digits).
        sample_size (`int`, defaults to 64): Image side the classifier was trained at; `prepare_images`
            resizes other sizes to it.
        block_out_channels (`tuple[int]`, defaults to `(32, 64, 96, 128)`): Width of each block; every block
            halves the image side.
        dropout (`float`, defaults to 0.1): Dropout on the pooled features before the heads (training only).
    """

    @register_to_config
    def __init__(
        self,
        labels: Optional[dict] = None,
        in_channels: int = 3,
        sample_size: int = 64,
        block_out_channels: tuple = (32, 64, 96, 128),
        dropout: float = 0.1,
    ):
        super().__init__()
        if not labels or any(len(values) < 2 for values in labels.values()):
            raise ValueError(f"labels must map each attribute to at least 2 value names, got {labels!r}")
        if sample_size // 2 ** len(block_out_channels) < 1:
            raise ValueError(f"{len(block_out_channels)} blocks halve sample_size={sample_size} below 1 pixel")
        channels = [in_channels, *block_out_channels]
        self.blocks = nn.ModuleList(
            ClassifierBlock(channels[i], channels[i + 1]) for i in range(len(block_out_channels))
        )
        self.feature_dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(channels[-1], len(values)) for name, values in labels.items()})

    @property
    def attribute_names(self) -> list[str]:
        """Head names in config order (alphabetical once saved and reloaded: look heads up by name)."""
        return list(self.config.labels)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """Classify images `sample` `(batch, in_channels, height, width)` in [-1, 1]."""
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample must have shape (batch, {self.config.in_channels}, height, width), got {tuple(sample.shape)}"
            )
        hidden_states = sample
        for block in self.blocks:
            hidden_states = block(hidden_states)
        features = hidden_states.mean(dim=(2, 3))  # (B, C): global average pool
        pooled = self.feature_dropout(features)
        logits = {name: head(pooled) for name, head in self.heads.items()}
        if not return_dict:
            return (logits, features)
        return AttributeClassifierOutput(logits=logits, features=features)

    @torch.no_grad()
    def classify(self, images, batch_size: int = 256) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Predicted value indices per attribute `{name: (N,)}` and features `(N, dim)` for any images.

        `images` is anything `prepare_images` accepts. Runs in eval mode, by batches, in float32 on the
        model's device; returns CPU tensors.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        sample = self.prepare_images(images)
        was_training = self.training
        self.eval()
        param = next(self.parameters())
        predictions, features = {name: [] for name in self.attribute_names}, []
        for start in range(0, sample.shape[0], batch_size):
            batch = sample[start : start + batch_size].to(device=param.device, dtype=param.dtype)
            output = self(batch)
            for name, logits in output.logits.items():
                predictions[name].append(logits.argmax(dim=1).cpu())
            features.append(output.features.float().cpu())
        self.train(was_training)
        return {name: torch.cat(parts) for name, parts in predictions.items()}, torch.cat(features)

    def decode_predictions(self, predictions: dict[str, torch.Tensor]) -> list[dict[str, str]]:
        """Turn `{name: (N,) indices}` into one `{name: value name}` dict per image."""
        names = self.attribute_names
        count = len(next(iter(predictions.values())))
        return [{name: self.config.labels[name][int(predictions[name][i])] for name in names} for i in range(count)]

    def prepare_images(self, images) -> torch.Tensor:
        """Convert images to the classifier's input: float32 `(N, in_channels, sample_size, sample_size)` in [-1, 1].

        Accepts a list of PIL images, a torch tensor `(N, C, H, W)` of floats in [-1, 1] (the library's
        convention), or a numpy array `(N, H, W, C)` of floats in [0, 1] (a pipeline's `output_type="np"`);
        tensors and arrays of uint8 are read as [0, 255]. Float pixels outside the expected range (beyond
        rounding) or NaN raise a `ValueError`: a float tensor in [0, 1] cannot be told from one in [-1, 1], so convert
        it (`x * 2 - 1`) first. RGB is averaged to grey for a 1-channel classifier and grey repeated for a
        3-channel one; other sizes are resized (bilinear, antialiased).
        """
        return prepare_images(images, self.config.in_channels, self.config.sample_size)


# How far (a share of the range's width) float pixels may stray outside their range before it is an error.
RANGE_TOLERANCE = 1e-3


def _check_range(images, value_range: tuple[float, float], expected: str) -> None:
    """Raise unless every pixel of `images` (numpy or torch) lies in `value_range` (up to `RANGE_TOLERANCE`)."""
    count = images.size if isinstance(images, np.ndarray) else images.numel()
    if not count:
        return
    low, high = value_range
    tolerance = RANGE_TOLERANCE * (high - low)
    found_low, found_high = float(images.min()), float(images.max())
    # NaN compares False with everything: without the isfinite check a NaN image would be classified as value 0.
    if not (math.isfinite(found_low) and math.isfinite(found_high)):
        raise ValueError(
            f"images: {expected}; got NaN or infinite pixels (a diverged model or a float16 overflow drew them)"
        )
    if found_low < low - tolerance or found_high > high + tolerance:
        raise ValueError(f"images: {expected}; got values in [{found_low:g}, {found_high:g}]")


def prepare_images(images, in_channels: int, size: int) -> torch.Tensor:
    """See `AttributeClassifier.prepare_images`."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], PIL.Image.Image):
        if len({image.size for image in images}) > 1:  # each resized on its own (np.stack needs one size)
            return torch.cat([prepare_images([image], in_channels, size) for image in images])
        arrays = [
            np.asarray(image.convert("RGB" if in_channels == 3 else "L"), dtype=np.float32) / 255 for image in images
        ]
        sample = torch.from_numpy(np.stack(arrays))
        sample = sample.unsqueeze(1) if sample.ndim == 3 else sample.permute(0, 3, 1, 2)
        sample = sample * 2 - 1
    elif isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"numpy images must have shape (N, H, W, C) in [0, 1], got {images.shape}")
        if images.dtype == np.uint8:  # [0, 255], as PIL images
            sample = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2) * 2 - 1
        else:
            expected = "numpy images (N, H, W, C) must be uint8 in [0, 255] or floats in [0, 1]"
            _check_range(images, (0.0, 1.0), expected)
            sample = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2) * 2 - 1
    elif isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"tensor images must have shape (N, C, H, W) in [-1, 1], got {tuple(images.shape)}")
        if images.dtype == torch.uint8:  # [0, 255]: as `references.uint8_to_float`
            sample = images.detach().cpu().float() / 127.5 - 1.0
        else:
            sample = images.detach().float().cpu()
            _check_range(
                sample, (-1.0, 1.0), "tensor images (N, C, H, W) must be uint8 in [0, 255] or floats in [-1, 1]"
            )
    else:
        raise TypeError(f"images must be a list of PIL images, a numpy array or a torch tensor, got {type(images)}")
    if sample.shape[1] != in_channels:
        if sample.shape[1] not in (1, 3):  # e.g. NCHW numpy or NHWC tensors: their rows were averaged as channels
            layout = "(N, H, W, C)" if isinstance(images, np.ndarray) else "(N, C, H, W)"
            raise ValueError(
                f"images have {sample.shape[1]} channels (read as {layout}); give 1- or 3-channel images "
                f"{layout} for this {in_channels}-channel classifier"
            )
        if in_channels == 1:
            sample = sample.mean(dim=1, keepdim=True)
        elif sample.shape[1] == 1:
            sample = sample.repeat(1, in_channels, 1, 1)
        else:
            raise ValueError(f"cannot convert {sample.shape[1]}-channel images to {in_channels} channels")
    if sample.shape[-2:] != (size, size):
        sample = F.interpolate(sample, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return sample.clamp(-1, 1)


def pretrained_classifier_path(task: str) -> str:
    """Folder of the classifier shipped for `task` ("cartoon-faces" or "digits")."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return os.path.join(WEIGHTS_DIR, task)


def classifier_folder(task_or_path: Union[str, os.PathLike]) -> str:
    """The folder of a shipped classifier by task name ("cartoon-faces", "digits"), or `task_or_path` itself;
    raises a `ValueError` unless it holds a saved classifier (`config.json`)."""
    path = pretrained_classifier_path(task_or_path) if task_or_path in TASKS else os.fspath(task_or_path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"no classifier at {path!r}: train one with training/train_classifier.py")
    return path


def load_classifier(task_or_path: Union[str, os.PathLike] = "cartoon-faces") -> AttributeClassifier:
    """Load a shipped classifier by task name ("cartoon-faces", "digits") or any saved folder, float32, eval mode."""
    path = classifier_folder(task_or_path)
    # Weights are stored in float16 to stay small; computing in float16 is slow on CPU, so upcast on load.
    model = AttributeClassifier.from_pretrained(path, torch_dtype=torch.float32)
    return model.eval()
