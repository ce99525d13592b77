"""scikit-learn digits as an image-caption set."""

import numpy as np
import pytest

from sdscratch.data.digits import (
    DIGIT_CAPTION_TEMPLATES,
    digit_caption,
    digit_image,
    digits_split_indices,
    load_digits_dataset,
)


def test_split_is_fixed_disjoint_and_complete():
    train, test = digits_split_indices("train", seed=0), digits_split_indices("test", seed=0)
    assert len(train) + len(test) == 1797 and not set(train) & set(test)
    assert 0.1 <= len(test) / 1797 <= 0.2
    assert np.array_equal(test, digits_split_indices("test", seed=0))
    assert not np.array_equal(test, digits_split_indices("test", seed=1))
    with pytest.raises(ValueError, match="split='val'"):
        digits_split_indices("val")


def test_captions():
    assert digit_caption(8, "numeral") == "8"
    assert digit_caption(8, "word") == "eight"
    assert digit_caption(8, "phrase") == "the digit 8"
    assert digit_caption(8, "handwritten") == "a handwritten 8"
    assert {digit_caption(3, "mixed", i) for i in range(12)} == {digit_caption(3, s) for s in DIGIT_CAPTION_TEMPLATES}
    with pytest.raises(ValueError, match="label"):
        digit_caption(12)


def test_dataset_columns_sizes_and_labels():
    ds = load_digits_dataset(size=16, split="test", caption_style="phrase")
    assert ds.column_names == ["image", "text", "label"]
    assert ds.features["label"].names == [str(d) for d in range(10)]
    row = ds[0]
    assert row["image"].mode == "L" and row["image"].size == (16, 16)
    assert row["text"] == f"the digit {row['label']}"
    assert load_digits_dataset(size=24, split="test", max_samples=2)[1]["image"].size == (24, 24)
    everything = load_digits_dataset(split="all", caption_style="all", max_samples=3)
    assert len(everything) == 3 * len(DIGIT_CAPTION_TEMPLATES)
    with pytest.raises(ValueError, match="caption_style"):
        load_digits_dataset(caption_style="poem")


def test_image_is_white_on_black_upsampled():
    from sklearn.datasets import load_digits

    pixels = load_digits().images[0]
    image = np.asarray(digit_image(pixels, size=8))
    assert np.array_equal(image, np.round(pixels * 255 / 16).astype(np.uint8))  # 8x8: exact, strokes bright
    big = np.asarray(digit_image(pixels, size=32), dtype=float)
    assert big.shape == (32, 32) and big[:2, :2].mean() < 10  # background stays black


@pytest.mark.parametrize("max_samples", [0, -1])
def test_max_samples_below_one_raises(max_samples):
    with pytest.raises(ValueError, match=f"max_samples must be an integer >= 1 .*got {max_samples}"):
        load_digits_dataset(split="test", max_samples=max_samples)


def test_test_fraction_that_empties_a_split_raises():
    for fraction in (1e-5, 1 - 1e-5):
        with pytest.raises(ValueError, match=f"test_fraction={fraction} holds out"):
            digits_split_indices("test", test_fraction=fraction)
    assert len(digits_split_indices("test", test_fraction=1 / 1797)) == 1  # the smallest split that works
    assert len(digits_split_indices("all", test_fraction=1e-5)) == 1797


def test_numpy_integer_size_is_accepted():
    ds = load_digits_dataset(size=np.int64(16), split="test", max_samples=np.int64(2))
    same = load_digits_dataset(size=16, split="test", max_samples=2)
    assert np.array_equal(np.asarray(ds[1]["image"]), np.asarray(same[1]["image"])) and ds["text"] == same["text"]
    with pytest.raises(ValueError, match="size must be an integer >= 8, got True"):
        load_digits_dataset(size=True)


def test_mixed_captions_cycle_the_variants_by_row():
    ds = load_digits_dataset(split="test", caption_style="mixed", max_samples=12)
    variants = list(DIGIT_CAPTION_TEMPLATES.values())
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    expected = [variants[row % 6].format(d=label, w=words[label]) for row, label in enumerate(ds["label"])]
    assert ds["text"] == expected
