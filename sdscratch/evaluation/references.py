"""Labelled real images for the metrics: procedural faces with their exact attributes, and the real digits.

Seeds are kept apart so that no set overlaps another (`face_seed(dataset_seed, index)` never repeats across
dataset seeds):

| set                                        | dataset seed                 |
|--------------------------------------------|------------------------------|
| diffusion-model training (data default)    | 0                            |
| classifier training / held-out accuracy    | 1000 / 1001                  |
| evaluation prompts and their real faces    | 10000 + 2 * seed             |
| evaluation reference faces (FD reference)  | 10000 + 2 * seed + 1         |
"""

from __future__ import annotations

import numbers
import random

import numpy as np
import torch

from ..data.cartoon_faces import ATTRIBUTES, face_seed, render_face, sample_attributes

CLASSIFIER_TRAIN_SEED = 1000
CLASSIFIER_EVAL_SEED = 1001
EVALUATION_SEED_OFFSET = 10000
DIGIT_NAMES = tuple(str(d) for d in range(10))


def classifier_labels(task: str) -> dict[str, list[str]]:
    """The `labels` config of the classifier for `task`: attribute name -> value names."""
    if task == "cartoon-faces":
        return {name: list(values) for name, values in ATTRIBUTES.items()}
    if task == "digits":
        return {"digit": list(DIGIT_NAMES)}
    raise ValueError(f"task must be 'cartoon-faces' or 'digits', got {task!r}")


def pil_to_uint8(images, channels: int) -> torch.Tensor:
    """PIL images -> uint8 tensor `(N, channels, H, W)` (RGB for 3 channels, grey for 1)."""
    arrays = [np.asarray(image.convert("RGB" if channels == 3 else "L")) for image in images]
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.unsqueeze(1) if channels == 1 else stacked.permute(0, 3, 1, 2).contiguous()


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 `(N, C, H, W)` -> float32 in [-1, 1] (the library's image range)."""
    return images.float() / 127.5 - 1.0


def encode_labels(attributes_list: list[dict], labels: dict[str, list[str]]) -> torch.Tensor:
    """Attribute dicts -> value indices `(N, num_attributes)`, column `i` for attribute `list(labels)[i]`.

    (A saved classifier's `config.labels` comes back in alphabetical order: index by name, not position.)
    """
    index = {name: {value: i for i, value in enumerate(values)} for name, values in labels.items()}
    return torch.tensor([[index[name][a[name]] for name in labels] for a in attributes_list], dtype=torch.long)


def labelled_faces(num_images: int, dataset_seed: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces `face_seed(dataset_seed, i)` for `i < num_images` with the generator's own attribute distribution.

    Returns:
        `(images, labels)`: uint8 `(N, 3, size, size)` and value indices `(N, len(ATTRIBUTES))`, columns in
        the order of `ATTRIBUTES`.
    """
    attributes_list = [sample_attributes(face_seed(dataset_seed, i)) for i in range(num_images)]
    images = [render_face(a, size=size, seed=face_seed(dataset_seed, i)) for i, a in enumerate(attributes_list)]
    return pil_to_uint8(images, 3), encode_labels(attributes_list, classifier_labels("cartoon-faces"))


def labelled_digits(split: str, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The real scikit-learn digits of `split` ("train" or "test") at `size`: uint8 `(N, 1, size, size)`, labels `(N, 1)`."""
    from ..data.digits import load_digits_dataset

    dataset = load_digits_dataset(size=size, split=split)
    images = pil_to_uint8(dataset["image"], 1)
    return images, torch.tensor(dataset["label"], dtype=torch.long).view(-1, 1)


def balanced_face_attributes(num_faces: int, seed: int = 0) -> list[dict[str, str]]:
    """`num_faces` full attribute sets in which every value of every attribute appears equally often.

    Each attribute gets its own shuffled cycle of values (so any prefix of the list covers every value once it
    is as long as the attribute has values); "none" fills half the cycle of glasses and facial hair, as in the
    generator, so "with" and "without" prompts are balanced. The glasses colour follows the glasses.
    """
    rng = random.Random(f"sdscratch-evaluation-attributes-{seed}")
    columns = {}
    for name, values in ATTRIBUTES.items():
        if name == "glasses_color":
            continue
        cycle = list(values)
        if name in ("glasses", "facial_hair"):
            cycle = ["none"] * (len(values) - 1) + list(values[1:])
        column = []
        while len(column) < num_faces:
            block = cycle[:]
            rng.shuffle(block)
            column.extend(block)
        columns[name] = column[:num_faces]
    colors = ATTRIBUTES["glasses_color"][1:]
    faces = []
    for i in range(num_faces):
        face = {name: columns[name][i] for name in columns}
        face["glasses_color"] = "none" if face["glasses"] == "none" else colors[rng.randrange(len(colors))]
        faces.append({name: face[name] for name in ATTRIBUTES})
    return faces


def check_integers(**values) -> None:
    """Raise a `TypeError` naming the first argument that is not an integer (a float or a string would fail deep in
    the face drawing or the batching, with an error naming neither)."""
    for name, value in values.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, got {value!r}")


def check_evaluation_seed(seed: int) -> None:
    """Raise unless `seed` is an integer >= 0: the held-out faces are data set `10000 + 2 * seed`, and a negative
    seed reaches the data sets training draws from (seed -5000 is the built-in training faces' data set 0)."""
    check_integers(seed=seed)
    if seed < 0:
        raise ValueError(
            f"seed must be >= 0 (the held-out faces are data set {EVALUATION_SEED_OFFSET} + 2 * seed; a negative "
            f"seed can reach the training faces), got {seed}"
        )


def render_faces(attributes_list: list[dict], dataset_seed: int, size: int = 64) -> torch.Tensor:
    """Draw each attribute set with jitter seed `face_seed(dataset_seed, i)`: float `(N, 3, size, size)` in [-1, 1]."""
    images = [render_face(a, size=size, seed=face_seed(dataset_seed, i)) for i, a in enumerate(attributes_list)]
    return uint8_to_float(pil_to_uint8(images, 3))


def held_out_faces(num_images: int, seed: int = 0, size: int = 64) -> tuple[list[dict], torch.Tensor]:
    """The held-out faces every evaluation uses as its real images: the balanced attribute sets of the
    evaluation prompts (dataset seed `10000 + 2 * seed`) drawn by the generator.

    Returns:
        `(attributes_list, images)`: one attribute dict per face and float `(N, 3, size, size)` in [-1, 1].
    """
    check_evaluation_seed(seed)
    prompt_seed = EVALUATION_SEED_OFFSET + 2 * seed
    attributes_list = balanced_face_attributes(num_images, seed=prompt_seed)
    return attributes_list, render_faces(attributes_list, prompt_seed, size)


def evaluation_face_sets(num_images: int, seed: int = 0, size: int = 64) -> dict:
    """The faces an evaluation compares against.

    Returns:
        `dict` with `prompt_attributes` (balanced attribute sets the prompts are made from), `prompt_faces`
        (those attribute sets drawn by the generator: what a perfect model would produce) and
        `reference_faces` (an independent balanced draw: the real side of every Frechet distance), the images
        as float `(N, 3, size, size)` in [-1, 1].
    """
    prompt_attributes, prompt_faces = held_out_faces(num_images, seed, size)
    prompt_seed = EVALUATION_SEED_OFFSET + 2 * seed
    reference_attributes = balanced_face_attributes(num_images, seed=prompt_seed + 1)
    return {
        "prompt_attributes": prompt_attributes,
        "prompt_faces": prompt_faces,
        "reference_faces": render_faces(reference_attributes, prompt_seed + 1, size),
    }


def split_digits_reference(size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The held-out real digits split into two disjoint halves (shuffled by `seed`), float in [-1, 1].

    Returns:
        `(reference, perfect, perfect_labels)`: the first half is the Frechet reference; the second half plays
        the "perfect model" (floor, VAE round trip), with its digit labels `(N,)`.
    """
    images, labels = labelled_digits("test", size=size)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    images, labels = uint8_to_float(images[order]), labels[order, 0]
    half = images.shape[0] // 2
    return images[:half], images[half : 2 * half], labels[half : 2 * half]
