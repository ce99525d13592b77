"""Prompt adherence: does a text-to-image model draw what its prompt names?

Prompts are built from balanced attribute sets (every value of every attribute equally often), each prompt
with the attributes it names as targets (`parse_caption`; "with glasses" targets "any kind but none").
The model draws one image per prompt and the shipped classifier reads the attributes back; adherence of an
attribute is the fraction of the prompts naming it whose image the classifier reads as the named value.
The classifier's own held-out accuracy (>= 99% on the caption attributes) bounds how much of a miss is the
classifier's: measure the "perfect model" (the generator's own faces for the same prompts) beside it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Optional

import numpy as np
import torch

from ..data.cartoon_faces import ANY, CAPTION_STYLES, make_caption, parse_caption
from ..data.digits import digit_caption
from .classifier import AttributeClassifier
from .references import DIGIT_NAMES, EVALUATION_SEED_OFFSET, balanced_face_attributes

# The prompt styles of each task (digits have no "mixed" style).
TASK_CAPTION_STYLES = {"cartoon-faces": tuple(CAPTION_STYLES), "digits": ("template", "rich")}


def build_adherence_prompts(
    num_prompts: int, task: str = "cartoon-faces", caption_style: str = "template", seed: int = 0
) -> list[tuple[str, dict[str, str]]]:
    """Prompts covering every value, each with the attribute values it names.

    Args:
        num_prompts (`int`): How many prompts; every value appears once `num_prompts` reaches the number of
            values of the attribute (10 hair colours...), and equally often (up to one) beyond.
        task (`str`, defaults to "cartoon-faces"): "cartoon-faces" or "digits".
        caption_style (`str`, defaults to "template"): For faces, "template" (the Skiittoo template: glasses,
            facial hair, hair colour, skin) or "rich" (free-form, naming a varying subset of all attributes).
            For digits, "template" gives `"8"`, "rich" cycles the digits data set's captions (`"eight"`,
            `"the digit 8"`, `"a handwritten 8"`...); digits have no "mixed" style (`TASK_CAPTION_STYLES`).
        seed (`int`, defaults to 0): Chooses the attribute sets; the same as `evaluation_face_sets(seed=...)`.

    Returns:
        `list[tuple[str, dict[str, str]]]`: `(prompt, targets)` pairs; a target value may be `ANY` (any value
        but "none").
    """
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    if caption_style not in CAPTION_STYLES:
        raise ValueError(f"caption_style must be one of {CAPTION_STYLES}, got {caption_style!r}")
    if task == "digits":
        if caption_style not in TASK_CAPTION_STYLES["digits"]:
            raise ValueError(
                f"caption_style must be one of {TASK_CAPTION_STYLES['digits']} for task='digits', got {caption_style!r}"
            )
        pairs = []
        for i in range(num_prompts):
            digit = DIGIT_NAMES[i % 10]
            prompt = digit_caption(int(digit), "mixed", i // 10) if caption_style == "rich" else digit
            pairs.append((prompt, {"digit": digit}))
        return pairs
    if task != "cartoon-faces":
        raise ValueError(f"task must be 'cartoon-faces' or 'digits', got {task!r}")
    attributes_list = balanced_face_attributes(num_prompts, seed=EVALUATION_SEED_OFFSET + 2 * seed)
    pairs = []
    for i, attributes in enumerate(attributes_list):
        prompt = make_caption(attributes, style=caption_style, seed=f"evaluation-{seed}-{i}")
        pairs.append((prompt, parse_caption(prompt)))
    return pairs


def target_matches(predicted: str, target: str) -> bool:
    """Whether a predicted value satisfies a prompt's target (`ANY` = any value but "none")."""
    return predicted != "none" if target == ANY else predicted == target


def adherence_from_predictions(predicted: list[dict[str, str]], targets: list[dict[str, str]]) -> dict:
    """Per-attribute accuracy of predicted attributes against prompt targets (one dict per image).

    Returns:
        `dict`: `accuracy` {attribute: fraction}, `count` {attribute: prompts naming it}, `per_value_accuracy`
        {attribute: {target value: fraction}} and `all_correct` (fraction of images with every target right).
    """
    if len(predicted) != len(targets):
        raise ValueError(f"{len(predicted)} predictions for {len(targets)} targets")
    hits, per_value = defaultdict(list), defaultdict(lambda: defaultdict(list))
    all_correct = []
    for prediction, target in zip(predicted, targets):
        correct = True
        for name, value in target.items():
            if name not in prediction:
                continue  # an attribute the classifier has no head for
            hit = target_matches(prediction[name], value)
            hits[name].append(hit)
            per_value[name][value].append(hit)
            correct &= hit
        all_correct.append(correct)
    return {
        "accuracy": {name: float(np.mean(h)) for name, h in hits.items()},
        "count": {name: len(h) for name, h in hits.items()},
        "per_value_accuracy": {
            name: {value: float(np.mean(h)) for value, h in sorted(values.items())}
            for name, values in per_value.items()
        },
        "all_correct": float(np.mean(all_correct)) if all_correct else None,
    }


def unnamed_attribute_balance(
    generated: list[dict[str, str]],
    targets: list[dict[str, str]],
    real: list[dict[str, str]],
    real_targets: list[dict[str, str]],
) -> dict:
    """How the attributes a prompt does not name are spread, in generated images against real ones.

    A model can follow every prompt and still draw what the prompts leave open from a narrow repertoire (green
    eyes on most faces whose prompt names no eye colour): adherence does not see it, the Frechet distance sees it
    without saying which attribute. Per attribute, over the images whose prompt does not name it, this compares
    the shares of the values the classifier reads in the generated images with those in the real images (for
    faces, the generator's own faces for the same prompts: the same correlations with what the prompts name) by
    their total variation distance, 0.5 * sum |p - q|: 0 for the same spread, 1 for disjoint ones. Eye colour is
    counted only on images read without sunglasses (they hide the eyes). Both sides are samples, so the distance
    has a noise floor: two samples of 300 from one uniform distribution of 4 values differ by 0.06 on average
    (0.10 at the 95th percentile), of 9 values by 0.09 (0.14); of 10 values and 85 images by 0.18 (0.26).

    Args:
        generated (`list[dict[str, str]]`): The classifier's reading of each generated image.
        targets (`list[dict[str, str]]`): What each generated image's prompt names (`parse_caption`).
        real (`list[dict[str, str]]`): Its reading of each real image.
        real_targets (`list[dict[str, str]]`): What each real image's caption names.

    Returns:
        `dict`: {attribute: {"total_variation", "generated": {value: share}, "real_images": {value: share},
        "count": generated images whose prompt does not name it}}, for the attributes some prompt leaves open
        (empty when every prompt names every attribute the classifier reads, as for digits).
    """
    for name, readings, named in (("generated", generated, targets), ("real", real, real_targets)):
        if len(readings) != len(named):
            raise ValueError(f"{len(readings)} {name} readings for {len(named)} targets")
    names = sorted(set().union(*generated) & set().union(*real))  # attributes both readings have
    balance = {}
    for name in names:
        sides = {}
        for side, readings, named in (("generated", generated, targets), ("real_images", real, real_targets)):
            sides[side] = [
                prediction[name]
                for prediction, target in zip(readings, named)
                if name not in target
                and name in prediction
                and not (name == "eye_color" and prediction.get("glasses") == "sunglasses")
            ]
        if not sides["generated"] or not sides["real_images"]:
            continue
        values = sorted(set(sides["generated"]) | set(sides["real_images"]))
        shares = {side: {value: read.count(value) / len(read) for value in values} for side, read in sides.items()}
        balance[name] = {
            "total_variation": 0.5 * sum(abs(shares["generated"][v] - shares["real_images"][v]) for v in values),
            **shares,
            "count": sum(name not in target for target in targets),
        }
    return balance


def measure_adherence(
    classifier: AttributeClassifier, images, targets: list[dict[str, str]]
) -> tuple[dict, torch.Tensor]:
    """Classify `images` (anything `prepare_images` takes) and score them against `targets`.

    Returns:
        `(metrics, features)`: the dict of `adherence_from_predictions` and the classifier features `(N, dim)`.
    """
    predictions, features = classifier.classify(images)
    return adherence_from_predictions(classifier.decode_predictions(predictions), targets), features


@torch.no_grad()
def generate_images(
    pipeline,
    prompts: list[str],
    num_inference_steps: int = 25,
    guidance_scale: Optional[float] = None,
    seed: int = 0,
    batch_size: int = 16,
    image: Optional[torch.Tensor] = None,
    **pipeline_kwargs,
) -> np.ndarray:
    """Draw one image per prompt: float `(N, H, W, C)` in [0, 1] (the pipeline's `output_type="np"`).

    Image `i` uses its own generator seeded `seed * 1_000_003 + i`, so an image does not depend on the batch
    size. `guidance_scale=None` keeps the pipeline's default. `image` (`(N, C, H, W)` in [0, 1], optional): one
    input image per prompt for img2img / inpainting, sliced with the prompts; `pipeline_kwargs` (e.g. `strength`,
    `mask_image`) go to every call.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    kwargs = {"num_inference_steps": num_inference_steps, "output_type": "np", **pipeline_kwargs}
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    if hasattr(pipeline, "set_progress_bar_config"):
        pipeline.set_progress_bar_config(disable=True)
    images = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + start + i) for i in range(len(batch))]
        if image is not None:
            kwargs["image"] = image[start : start + len(batch)]
        images.append(np.asarray(pipeline(prompt=batch, generator=generators, **kwargs).images, dtype=np.float32))
    return np.concatenate(images)


def evaluate_adherence(
    pipeline,
    classifier: AttributeClassifier,
    prompts_and_targets: list[tuple[str, dict[str, str]]],
    num_inference_steps: int = 25,
    guidance_scale: Optional[float] = None,
    seed: int = 0,
    batch_size: int = 16,
) -> dict:
    """Prompt adherence of a text-to-image pipeline.

    Args:
        pipeline: A text-to-image pipeline (`pipeline(prompt=list, num_inference_steps, guidance_scale,
            generator=list, output_type="np").images`), e.g. `CartoonFacePipeline`.
        classifier (`AttributeClassifier`): Reads the attributes back (`load_classifier("cartoon-faces")`).
        prompts_and_targets: `(prompt, targets)` pairs, e.g. from `build_adherence_prompts`.
        num_inference_steps (`int`, defaults to 25): Denoising steps.
        guidance_scale (`float`, *optional*): Classifier-free guidance scale; `None` keeps the pipeline's default.
        seed (`int`, defaults to 0): Seeds image `i` with `seed * 1_000_003 + i`.
        batch_size (`int`, defaults to 16): Prompts per pipeline call.

    Returns:
        `dict`: `adherence` (see `adherence_from_predictions`), `images` (float `(N, H, W, C)` in [0, 1]),
        `features` (classifier features `(N, dim)`), `predictions` (one attribute dict per image) and
        `seconds_per_image`.
    """
    prompts = [prompt for prompt, _ in prompts_and_targets]
    targets = [target for _, target in prompts_and_targets]
    start = time.perf_counter()
    images = generate_images(pipeline, prompts, num_inference_steps, guidance_scale, seed, batch_size)
    seconds_per_image = (time.perf_counter() - start) / len(prompts)
    predictions, features = classifier.classify(images)
    predicted = classifier.decode_predictions(predictions)
    return {
        "adherence": adherence_from_predictions(predicted, targets),
        "images": images,
        "features": features,
        "predictions": predicted,
        "seconds_per_image": seconds_per_image,
    }
