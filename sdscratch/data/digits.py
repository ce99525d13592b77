"""Real handwritten digits as an image-caption set: ``sklearn.datasets.load_digits`` (1,797 8x8 digits).

The digits ship inside scikit-learn, so this real data works offline. Images are grayscale ("L" mode), white
strokes on black like MNIST, upsampled bicubically from 8x8 to ``size``; a model for them has
``in_channels=1`` (``load_image_caption_dataset`` converts them to RGB like every other source, and
``build_image_transform(channels=1)`` takes them back to one channel).

Captions name the digit: ``"8"``, ``"eight"``, ``"the digit 8"``, ``"a handwritten 8"``, ...
"""

import numbers
from typing import Optional

import numpy as np
from PIL import Image

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Caption variants; "{d}" = the numeral, "{w}" = the word.
DIGIT_CAPTION_TEMPLATES = {
    "numeral": "{d}",
    "word": "{w}",
    "phrase": "the digit {d}",
    "handwritten": "a handwritten {d}",
    "number": "the number {w}",
    "handwritten_word": "a handwritten digit {w}",
}
# "mixed": each row takes one variant, chosen by its index (deterministic); "all": one row per variant.
DIGIT_CAPTION_STYLES = (*DIGIT_CAPTION_TEMPLATES, "mixed", "all")
DIGITS_SPLITS = ("train", "test", "all")


def digit_caption(label: int, style: str = "phrase", index: int = 0) -> str:
    """Caption of digit ``label``: one of ``DIGIT_CAPTION_TEMPLATES``, or for ``"mixed"`` the variant
    number ``index`` (cycling)."""
    if not 0 <= int(label) <= 9:
        raise ValueError(f"label must be a digit 0-9, got {label!r}")
    if style == "mixed":
        style = list(DIGIT_CAPTION_TEMPLATES)[index % len(DIGIT_CAPTION_TEMPLATES)]
    if style not in DIGIT_CAPTION_TEMPLATES:
        raise ValueError(f"caption style {style!r} is not one of {tuple(DIGIT_CAPTION_TEMPLATES) + ('mixed',)}")
    return DIGIT_CAPTION_TEMPLATES[style].format(d=int(label), w=DIGIT_WORDS[int(label)])


def digits_split_indices(split: str = "train", seed: int = 0, test_fraction: float = 0.15) -> np.ndarray:
    """Row indices of ``split`` among the 1,797 digits: a fixed-seed shuffle, the last ``test_fraction`` held
    out. Sorted, so that a split lists rows in the original order."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"split={split!r} is not one of {DIGITS_SPLITS}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = 1797
    if split == "all":
        return np.arange(n)
    n_test = int(round(n * test_fraction))
    if not 0 < n_test < n:
        raise ValueError(
            f"test_fraction={test_fraction} holds out {n_test} of the {n} digits, leaving the "
            f"{'test' if n_test == 0 else 'train'} split empty; use a value in [{1 / n:.5f}, {1 - 1 / n:.5f}]"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n - n_test :] if split == "test" else order[: n - n_test])


def digit_image(pixels_8x8: np.ndarray, size: int = 16) -> Image.Image:
    """An 8x8 array of sklearn intensities (0-16) as a ``size x size`` "L" image, white on black."""
    array = np.clip(np.asarray(pixels_8x8, dtype=np.float64).reshape(8, 8) * (255.0 / 16.0), 0, 255)
    image = Image.fromarray(np.round(array).astype(np.uint8), mode="L")
    return image if size == 8 else image.resize((size, size), Image.Resampling.BICUBIC)


def load_digits_dataset(
    size: int = 16,
    split: str = "train",
    seed: int = 0,
    caption_style: str = "mixed",
    test_fraction: float = 0.15,
    max_samples: Optional[int] = None,
):
    """The scikit-learn digits as a ``datasets.Dataset``.

    Args:
        size: image width and height, an integer >= 8 (the originals are 8x8; upsampled bicubically).
        split: ``"train"``, ``"test"`` (the held-out ``test_fraction``, by ``seed``) or ``"all"``.
        seed: seed of the train/test shuffle (the same seed always gives the same split).
        caption_style: one of ``DIGIT_CAPTION_STYLES``; ``"mixed"`` cycles through the variants by row,
            ``"all"`` repeats every image once per variant.
        test_fraction: share of the digits held out for ``"test"``; neither split may be empty (at least one of
            the 1,797 digits each side).
        max_samples: keep only the first rows (an integer >= 1; ``None``: every row).

    Returns:
        ``datasets.Dataset`` with columns ``image`` (PIL "L"), ``text`` and ``label`` (``ClassLabel`` "0"-"9").
    """
    import datasets
    from sklearn.datasets import load_digits

    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    size = int(size)
    if caption_style not in DIGIT_CAPTION_STYLES:
        raise ValueError(f"caption_style={caption_style!r} is not one of {DIGIT_CAPTION_STYLES}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, numbers.Integral) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be an integer >= 1 (or None for every row), got {max_samples!r}")
    bunch = load_digits()
    indices = digits_split_indices(split, seed, test_fraction)
    if max_samples is not None:
        indices = indices[:max_samples]
    styles = list(DIGIT_CAPTION_TEMPLATES) if caption_style == "all" else [caption_style]

    images, texts, labels = [], [], []
    for row, index in enumerate(indices):
        image, label = digit_image(bunch.images[index], size), int(bunch.target[index])
        for style in styles:
            images.append(image)
            texts.append(digit_caption(label, style, index=row))
            labels.append(label)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=[str(d) for d in range(10)]),
        }
    )
    return datasets.Dataset.from_dict({"image": images, "text": texts, "label": labels}, features=features)
