"""How the pipeline reads `image` / `mask_image` (diffusers' `PipelineImageInput`): the layout
`VaeImageProcessor.preprocess` makes of them, their types and value range, and uint8 / boolean inputs made float.

Used by `check_inputs` (input_checks.py) before any model runs, and by `CartoonFacePipeline` to derive defaults
(batch size, output size) from the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch

#: Image types `image` / `mask_image` accept (one of these, or a list of them), as diffusers' `PipelineImageInput`.
IMAGE_TYPES = (PIL.Image.Image, np.ndarray, torch.Tensor)


def _item_layout(item: Any, name: str, grayscale: bool, in_list: bool) -> tuple[int, int | None, int, int]:
    """`(batch, channels, height, width)` of one entry of a `PipelineImageInput` (see `image_layout`)."""
    if isinstance(item, PIL.Image.Image):
        return 1, None, item.height, item.width
    shape = tuple(item.shape)
    if isinstance(item, np.ndarray):  # channels last
        if len(shape) == 4:
            return shape[0], shape[3], shape[1], shape[2]
        if len(shape) == 3:
            if grayscale and not in_list and shape[-1] != 1:  # (B, H, W), as diffusers' mask inputs
                return shape[0], 1, shape[1], shape[2]
            return 1, shape[2], shape[0], shape[1]  # (H, W, C)
        if len(shape) == 2:  # (H, W)
            return 1, 1, shape[0], shape[1]
        allowed = "(B, H, W, C), (H, W, C)" + (", (B, H, W)" if grayscale and not in_list else "") + " or (H, W)"
    else:  # torch.Tensor, channels first
        if len(shape) == 4:
            return shape
        if len(shape) == 3:
            if grayscale and not in_list:  # (B, H, W) or (1, H, W): diffusers inserts the channel dimension
                return shape[0], 1, shape[1], shape[2]
            return 1, *shape  # (C, H, W)
        if len(shape) == 2 and grayscale:  # (H, W)
            return 1, 1, shape[0], shape[1]
        allowed = "(B, C, H, W), (C, H, W)" + (", (B, H, W) or (H, W)" if grayscale else "")
    raise ValueError(
        f"`{name}`: a {type(item).__name__} of shape {shape} is not an image here; allowed shapes: {allowed}."
    )


def image_layout(image: Any, name: str = "image", grayscale: bool = False) -> tuple[int, int | None, int, int]:
    """`(batch, channels, height, width)` that diffusers' `VaeImageProcessor.preprocess` makes of `image`.

    Follows `preprocess`'s own normalisation, so that defaults derived from the input (output size, batch size)
    are those of the tensor the pipeline will actually use:

    - a PIL image is one image (its channels are converted by the processor: `None` here); a list of them is a
      batch, resized to the size of the first;
    - numpy arrays are channels-last: `(B, H, W, C)`, `(H, W, C)` or `(H, W)`; a list stacks them (4-D ones are
      concatenated);
    - tensors are channels-first: `(B, C, H, W)` or `(C, H, W)`; a list stacks them (4-D ones are concatenated);
    - with a grayscale processor (`grayscale=True`, as for masks), a single 3-D numpy array is `(H, W, 1)` when
      its last dimension is 1 and `(B, H, W)` otherwise, a single 3-D tensor is `(B, H, W)` (or `(1, H, W)`), and
      2-D tensors `(H, W)` are accepted.

    Args:
        image (`PipelineImageInput`): PIL image, numpy array, torch tensor or a non-empty list of one of them.
        name (`str`, defaults to `"image"`): The argument's name, for error messages.
        grayscale (`bool`, defaults to `False`): Whether the processor has `do_convert_grayscale=True`.

    Returns:
        `tuple[int, int | None, int, int]`: Batch size, channels (`None` for PIL), height and width (of the first
        image, which every other one must match unless they are PIL images).

    Raises:
        `ValueError`: For an array / tensor shape that is not an image, or list entries of different sizes.
    """
    check_image_type(image, name)
    items = image if isinstance(image, list) else [image]
    layouts = [_item_layout(item, name, grayscale, in_list=isinstance(image, list)) for item in items]
    _, channels, height, width = layouts[0]
    if not isinstance(items[0], PIL.Image.Image):
        others = {tuple(layout[1:]) for layout in layouts[1:]} - {(channels, height, width)}
        if others:
            raise ValueError(
                f"`{name}`: every entry of the list must have the first one's (channels, height, width) "
                f"{(channels, height, width)}, got {sorted(others)}."
            )
    return sum(layout[0] for layout in layouts), channels, height, width


def check_float_image_range(image: Any, name: str = "image") -> None:
    """Raises `ValueError` for a float array / tensor with values above 1: `VaeImageProcessor` reads floats as [0, 1]
    (or the deprecated [-1, 1]), so 0-255 floats (`np.array(pil_image).astype(np.float32)`) would come out white."""
    for item in image if isinstance(image, list) else [image]:
        if isinstance(item, np.ndarray) and np.issubdtype(item.dtype, np.floating) and item.size:
            high = float(np.nanmax(item))
        elif isinstance(item, torch.Tensor) and item.is_floating_point() and item.numel():
            high = float(item.detach().float().max())
        else:
            continue
        if high > 1.0 + 1e-3:
            raise ValueError(
                f"`{name}`: float arrays and tensors must hold values in [0, 1], got values up to {high:g}; divide "
                "0-255 values by 255 (or pass uint8 or a PIL image)."
            )


def as_float_images(image: Any, scale_uint8: bool) -> Any:
    """`image` (a `PipelineImageInput`) with boolean and (`scale_uint8=True`) uint8 arrays / tensors made float32.

    `VaeImageProcessor` takes numpy arrays and tensors as floats in [0, 1]: a uint8 image (`np.array(pil_image)`,
    0-255) would be normalised to [-1, 509] and decode to a white image, and boolean ones crash its resize. uint8
    images are divided by 255 (as PIL images are read); masks keep their uint8 values (0/1 and 0/255 both binarise
    right) and booleans become 0.0 / 1.0.
    """
    if isinstance(image, list):
        return [as_float_images(item, scale_uint8) for item in image]
    if isinstance(image, np.ndarray):
        if image.dtype == np.bool_:
            return image.astype(np.float32)
        if scale_uint8 and image.dtype == np.uint8:
            return image.astype(np.float32) / 255
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.bool:
            return image.float()
        if scale_uint8 and image.dtype == torch.uint8:
            return image.float() / 255
    return image


def check_image_type(image: Any, name: str) -> None:
    """Raises `TypeError` unless `image` is a PIL image, numpy array, torch tensor, or a non-empty list of one of
    those types."""
    items = image if isinstance(image, list) else [image]
    kinds = sorted({type(i).__name__ for i in items}) or ["empty list"]
    if len(items) == 0 or not all(isinstance(i, IMAGE_TYPES) for i in items):
        raise TypeError(
            f"`{name}` must be a PIL.Image.Image, np.ndarray or torch.Tensor (or a list of them), got {kinds}."
        )
    if len({next(t for t in IMAGE_TYPES if isinstance(i, t)) for i in items}) > 1:
        raise TypeError(f"`{name}`: a list must hold images of one type (PIL, numpy or torch), got {kinds}.")
