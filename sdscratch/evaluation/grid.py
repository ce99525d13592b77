"""A PNG grid of images with their prompts written under each (for evaluation reports and model cards)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to lines at most `width` pixels wide (a word longer than a line gets its own line)."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line] if line else lines


def _to_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image, dtype=np.float32)  # (H, W, C) or (H, W) in [0, 1]
    array = (array.clip(0, 1) * 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array).convert("RGB")


def captioned_grid(
    images,
    captions: Optional[list[str]] = None,
    columns: int = 8,
    tile_size: int = 128,
    caption_lines: int = 5,
    highlights: Optional[list[Optional[str]]] = None,
) -> Image.Image:
    """Lay images out in a grid, each upscaled to `tile_size` with its caption wrapped below it.

    Args:
        images: PIL images or a float array `(N, H, W, C)` in [0, 1] (a pipeline's `output_type="np"`).
        captions (`list[str]`, *optional*): One caption per image.
        columns (`int`, defaults to 8): Images per row.
        tile_size (`int`, defaults to 128): Side of each tile (nearest-neighbour upscaling keeps pixels crisp).
        caption_lines (`int`, defaults to 5): Text lines reserved under each tile (longer captions are cut).
        highlights (`list[str | None]`, *optional*): An extra line per image drawn in red (e.g. the attributes
            the classifier read differently from the prompt); `None` for none.

    Returns:
        `PIL.Image.Image`: the grid.
    """
    tiles = [_to_pil(image).resize((tile_size, tile_size), Image.NEAREST) for image in images]
    if not tiles:
        raise ValueError("images is empty")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} images")
    font = ImageFont.load_default()
    line_height = 11
    lines = caption_lines + (1 if highlights is not None else 0) if captions is not None else 0
    cell_height = tile_size + lines * line_height + (4 if lines else 0)
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (tile_size + 4), rows * cell_height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for index, tile in enumerate(tiles):
        x, y = (index % columns) * (tile_size + 4), (index // columns) * cell_height
        grid.paste(tile, (x, y))
        if captions is None:
            continue
        wrapped = _wrap(captions[index], font, tile_size)[:caption_lines]
        for line_number, line in enumerate(wrapped):
            draw.text((x, y + tile_size + 2 + line_number * line_height), line, fill=(0, 0, 0), font=font)
        if highlights is not None and highlights[index]:
            text = _wrap(highlights[index], font, tile_size)[0]
            draw.text((x, y + tile_size + 2 + caption_lines * line_height), text, fill=(200, 0, 0), font=font)
    return grid
