"""All the metrics of one pipeline (`evaluate_pipeline`), or of its VAE alone (`evaluate_vae`), on the same
held-out images: prompt adherence, Frechet classifier distance, VAE reconstruction and the text encoder's
separation of the attribute words, each beside its floor (docs/evaluation.md).

`python -m sdscratch.evaluate` (sdscratch/evaluate.py) is the command line around these two functions.
"""

from __future__ import annotations

import time
from typing import Optional

from .adherence import (
    adherence_from_predictions,
    build_adherence_prompts,
    evaluate_adherence,
    unnamed_attribute_balance,
)
from .classifier import AttributeClassifier, load_classifier
from .frechet import frechet_distance_from_features
from .reconstruction import reconstruct_images, reconstruction_metrics
from .references import (
    check_evaluation_seed,
    check_integers,
    classifier_labels,
    evaluation_face_sets,
    split_digits_reference,
)
from .text_separation import text_encoder_separation


def _real_sets(task: str, num_images: int, seed: int, size: int, prompts_and_targets) -> dict:
    """Reference images (FD's real side), "perfect model" images (floor) and the targets those satisfy."""
    if task == "cartoon-faces":
        sets = evaluation_face_sets(num_images, seed=seed, size=size)
        return {
            "reference": sets["reference_faces"],
            "perfect": sets["prompt_faces"],  # the generator's own faces for exactly these prompts
            "perfect_targets": [target for _, target in prompts_and_targets],
        }
    reference, perfect, perfect_labels = split_digits_reference(size=size, seed=seed)
    return {
        "reference": reference,
        "perfect": perfect,
        "perfect_targets": [{"digit": str(int(label))} for label in perfect_labels],
    }


def _classified_real_sets(
    classifier: AttributeClassifier, task: str, num_images: int, seed: int, size: int, prompts_and_targets
) -> dict:
    """`_real_sets` read by the classifier: adds `perfect_adherence`, `perfect_predictions` (one attribute dict per
    image), `perfect_features`, `reference_features`."""
    real = _real_sets(task, num_images, seed, size, prompts_and_targets)
    predictions, real["perfect_features"] = classifier.classify(real["perfect"])
    real["perfect_predictions"] = classifier.decode_predictions(predictions)
    real["perfect_adherence"] = adherence_from_predictions(real["perfect_predictions"], real["perfect_targets"])
    _, real["reference_features"] = classifier.classify(real["reference"])
    return real


def _check_counts(num_images: int, seed: int, batch_size: int) -> None:
    """Raise a `TypeError` / `ValueError` naming the argument before anything is drawn."""
    check_integers(num_images=num_images, batch_size=batch_size)
    check_evaluation_seed(seed)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2 (the Frechet distance fits a covariance), got {num_images}")


def _check_classifier_task(classifier: AttributeClassifier, task: str) -> None:
    """A classifier of another task (a `--classifier_path` of the digits one with faces) reads none of the attributes
    the prompts name: adherence would be empty and `all_correct` 1.0. Refuse it before generating anything."""
    names, expected = list(classifier.attribute_names), list(classifier_labels(task))
    if not set(names) & set(expected):
        raise ValueError(
            f"classifier reads {names}, none of the task={task!r} attributes {expected}: pass a classifier trained "
            f"for {task!r} (or none: the shipped one)"
        )


def _check_task_channels(pipeline, task: str) -> None:
    """A grayscale pipeline (a digits model) cannot draw the coloured faces the "cartoon-faces" prompts name: its
    numbers would be meaningless, so refuse before generating anything (e.g. `--task` left at its default)."""
    vae, unet = getattr(pipeline, "vae", None), getattr(pipeline, "unet", None)
    model = vae if vae is not None else unet
    channels = getattr(getattr(model, "config", None), "out_channels", None)
    if task == "cartoon-faces" and channels == 1:
        raise ValueError(
            "task='cartoon-faces' reads coloured faces, but this pipeline draws 1-channel (grayscale) images; "
            "a digits model is evaluated with task='digits' (--task digits)."
        )


def evaluate_pipeline(
    pipeline,
    task: str = "cartoon-faces",
    classifier: Optional[AttributeClassifier] = None,
    num_images: int = 500,
    num_inference_steps: int = 25,
    guidance_scale: Optional[float] = None,
    seed: int = 0,
    batch_size: int = 25,
    caption_style: str = "template",
) -> tuple[dict, dict]:
    """All the metrics of one pipeline.

    Args:
        pipeline: A `CartoonFacePipeline` (or any pipeline with the same `__call__` and an optional `vae`).
        task (`str`, defaults to "cartoon-faces"): "cartoon-faces" or "digits"; picks prompts, classifier and
            real images.
        classifier (`AttributeClassifier`, *optional*): Defaults to the shipped one for `task`.
        num_images (`int`, defaults to 500): Generated images (one per prompt), at least 2. The real faces are
            as many; the real digits are always the held-out set's two fixed halves (67 digits each).
        num_inference_steps, guidance_scale, seed, batch_size: As `evaluate_adherence`.
        caption_style (`str`, defaults to "template"): As `build_adherence_prompts` (`TASK_CAPTION_STYLES[task]`).

    Returns:
        `(metrics, outputs)`: a JSON-able dict of metrics, and `outputs` with `images` (float `(N, H, W, C)`
        in [0, 1]), `prompts`, `targets` and `predictions` (for grids).
    """
    _check_counts(num_images, seed, batch_size)
    _check_task_channels(pipeline, task)
    classifier = classifier if classifier is not None else load_classifier(task)
    _check_classifier_task(classifier, task)
    start = time.perf_counter()

    # 1. Prompt adherence of generated images.
    prompts_and_targets = build_adherence_prompts(num_images, task=task, caption_style=caption_style, seed=seed)
    result = evaluate_adherence(
        pipeline, classifier, prompts_and_targets, num_inference_steps, guidance_scale, seed, batch_size
    )
    size = result["images"].shape[1]

    # 2. Real images: the Frechet reference, and the "perfect model" (what the data itself scores).
    real = _classified_real_sets(classifier, task, num_images, seed, size, prompts_and_targets)
    perfect_adherence, perfect_features = real["perfect_adherence"], real["perfect_features"]
    reference_features = real["reference_features"]

    # 3. VAE round trip of the perfect images: reconstruction error and its own adherence / distance.
    vae = getattr(pipeline, "vae", None)
    reconstruction, vae_adherence, vae_features = None, None, None
    if vae is not None:
        reconstruction, vae_adherence, vae_features, _, _ = _round_trip(vae, classifier, real, batch_size)

    # 4. Frechet classifier distances, all against the same reference set and with the same number of images.
    count = min(len(result["features"]), len(perfect_features), len(reference_features))
    generated_fd = frechet_distance_from_features(result["features"][:count], reference_features[:count])
    floor_fd = frechet_distance_from_features(perfect_features[:count], reference_features[:count])
    vae_fd = (
        frechet_distance_from_features(vae_features[:count], reference_features[:count]) if vae is not None else None
    )

    # 5. Does the text encoder tell each attribute's words apart at all (no images needed)?
    separation = None
    if getattr(pipeline, "text_encoder", None) is not None and getattr(pipeline, "tokenizer", None) is not None:
        separation = text_encoder_separation(pipeline.tokenizer, pipeline.text_encoder, task=task, seed=seed)

    metrics = {
        "task": task,
        "num_images": len(prompts_and_targets),
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale if guidance_scale is not None else getattr(pipeline, "_guidance_scale", None),
        "scheduler": type(pipeline.scheduler).__name__,
        "seed": seed,
        "caption_style": caption_style,
        "image_size": size,
        "adherence": result["adherence"],
        "adherence_real_images": perfect_adherence["accuracy"],
        "adherence_vae_reconstructions": vae_adherence["accuracy"] if vae_adherence else None,
        "unnamed_attributes": unnamed_attribute_balance(
            result["predictions"],
            [target for _, target in prompts_and_targets],
            real["perfect_predictions"],
            real["perfect_targets"],
        ),
        "frechet_distance": {
            "generated": generated_fd,
            "real_floor": floor_fd,
            "vae_reconstructions": vae_fd,
            "generated_over_vae": generated_fd / vae_fd if vae_fd else None,
            "num_images": count,
            "feature_dim": int(reference_features.shape[1]),
        },
        "reconstruction": reconstruction,
        "text_encoder_separation": separation,
        "seconds_per_image": result["seconds_per_image"],
        "total_seconds": time.perf_counter() - start,
    }
    outputs = {
        "images": result["images"],
        "prompts": [prompt for prompt, _ in prompts_and_targets],
        "targets": [target for _, target in prompts_and_targets],
        "predictions": result["predictions"],
    }
    return metrics, outputs


def _round_trip(vae, classifier: AttributeClassifier, real: dict, batch_size: int):
    """Encode + decode the "perfect" images, classified once: (reconstruction metrics, adherence, classifier
    features, reconstructions, decoded predictions)."""
    reconstructions = reconstruct_images(vae, real["perfect"], batch_size=batch_size)
    predictions, features = classifier.classify(reconstructions)
    predictions = classifier.decode_predictions(predictions)
    adherence = adherence_from_predictions(predictions, real["perfect_targets"])
    return reconstruction_metrics(reconstructions, real["perfect"]), adherence, features, reconstructions, predictions


def evaluate_vae(
    vae,
    task: str = "cartoon-faces",
    classifier: Optional[AttributeClassifier] = None,
    num_images: int = 500,
    seed: int = 0,
    batch_size: int = 25,
    caption_style: str = "template",
) -> tuple[dict, dict]:
    """The VAE's share of `evaluate_pipeline`, without a UNet: how well a VAE keeps what the prompts name.

    The held-out images are those `evaluate_pipeline` uses as its "perfect model" for the same `num_images`,
    `seed` and `caption_style` (the generator's own faces for the evaluation prompts), so the numbers are the
    ones a pipeline's `adherence_vae_reconstructions`, `reconstruction` and FD `vae_reconstructions` would show.

    Args:
        vae: An `AutoencoderKL`-compatible model (`SmallVAE`, diffusers' `AutoencoderKL`).
        task, classifier, num_images, seed, batch_size, caption_style: As `evaluate_pipeline`.

    Returns:
        `(metrics, outputs)`: metrics as `evaluate_pipeline`'s (no generated-image keys), and `outputs` with the
        reconstructions as `images` (float `(N, H, W, C)` in [0, 1]), `prompts`, `targets` and `predictions`.
    """
    _check_counts(num_images, seed, batch_size)
    classifier = classifier if classifier is not None else load_classifier(task)
    _check_classifier_task(classifier, task)
    start = time.perf_counter()
    prompts_and_targets = build_adherence_prompts(num_images, task=task, caption_style=caption_style, seed=seed)
    size = int(vae.config.sample_size)
    real = _classified_real_sets(classifier, task, num_images, seed, size, prompts_and_targets)
    perfect_features, reference_features = real["perfect_features"], real["reference_features"]
    reconstruction, adherence, features, images, predictions = _round_trip(vae, classifier, real, batch_size)
    count = min(len(features), len(perfect_features), len(reference_features))
    metrics = {
        "task": task,
        "num_images": len(prompts_and_targets),
        "seed": seed,
        "caption_style": caption_style,
        "image_size": size,
        "adherence_real_images": real["perfect_adherence"]["accuracy"],
        "adherence_vae_reconstructions": adherence["accuracy"],
        "adherence_vae_reconstructions_per_value": adherence["per_value_accuracy"],
        "frechet_distance": {
            "vae_reconstructions": frechet_distance_from_features(features[:count], reference_features[:count]),
            "real_floor": frechet_distance_from_features(perfect_features[:count], reference_features[:count]),
            "num_images": count,
            "feature_dim": int(reference_features.shape[1]),
        },
        "reconstruction": reconstruction,
        "total_seconds": time.perf_counter() - start,
    }
    outputs = {
        "images": ((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy(),
        "prompts": [prompt for prompt, _ in prompts_and_targets],
        "targets": real["perfect_targets"],
        "predictions": predictions,
    }
    return metrics, outputs
