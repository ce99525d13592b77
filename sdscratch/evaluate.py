"""Evaluate a text-to-image pipeline folder: prompt adherence, Frechet classifier distance, VAE reconstruction,
and how well the text encoder separates the attribute words.

    python -m sdscratch.evaluate --model_path <pipeline folder> --output_dir eval/cartoon-faces \
        --num_images 500 --num_inference_steps 25 --guidance_scale 3 --scheduler dpm++ --seed 0
    python -m sdscratch.evaluate --model_path <digits pipeline folder> --output_dir eval/digits --task digits
    python -m sdscratch.evaluate --model_path <train_vae.py output folder> --output_dir eval/vae --num_images 512

A VAE folder alone (a `SmallVAE` or `AutoencoderKL` config in it or in its `vae/` subfolder, as `train_vae.py`
writes) is evaluated without a UNet: reconstruction error, the adherence of the reconstructions (what a UNet on
these latents can at best reach) and their Frechet distance, on the same held-out faces as a pipeline's. Its
`grid.png` shows reconstructions.

Writes `<output_dir>/metrics.json` and `<output_dir>/grid.png` (the first `--grid_images` generated images
with their prompts; the attributes the classifier read differently are written in red; `--grid_images 0`: no
grid). `--num_images` must be at least 2 (the Frechet distance fits a covariance). See
docs/evaluation.md for what each number means and its floor.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import time
from typing import Optional

from .evaluation.adherence import (
    TASK_CAPTION_STYLES,
    adherence_from_predictions,
    build_adherence_prompts,
    evaluate_adherence,
    measure_adherence,
    target_matches,
)
from .evaluation.classifier import AttributeClassifier, load_classifier, pretrained_classifier_path
from .evaluation.frechet import frechet_distance_from_features
from .evaluation.grid import captioned_grid
from .evaluation.reconstruction import reconstruct_images, reconstruction_metrics, similarity_text
from .evaluation.references import evaluation_face_sets, split_digits_reference
from .evaluation.text_separation import text_encoder_separation


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
    """`_real_sets` read by the classifier: adds `perfect_adherence`, `perfect_features`, `reference_features`."""
    real = _real_sets(task, num_images, seed, size, prompts_and_targets)
    real["perfect_adherence"], real["perfect_features"] = measure_adherence(
        classifier, real["perfect"], real["perfect_targets"]
    )
    _, real["reference_features"] = classifier.classify(real["reference"])
    return real


def _check_num_images(num_images: int) -> None:
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2 (the Frechet distance fits a covariance), got {num_images}")


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
        num_images (`int`, defaults to 500): Generated images (one per prompt), at least 2.
        num_inference_steps, guidance_scale, seed, batch_size: As `evaluate_adherence`.
        caption_style (`str`, defaults to "template"): As `build_adherence_prompts` (`TASK_CAPTION_STYLES[task]`).

    Returns:
        `(metrics, outputs)`: a JSON-able dict of metrics, and `outputs` with `images` (float `(N, H, W, C)`
        in [0, 1]), `prompts`, `targets` and `predictions` (for grids).
    """
    _check_num_images(num_images)
    _check_task_channels(pipeline, task)
    classifier = classifier if classifier is not None else load_classifier(task)
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
    _check_num_images(num_images)
    classifier = classifier if classifier is not None else load_classifier(task)
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


def load_vae_folder(path: str):
    """The VAE in `path` or `path/vae` (`train_vae.py`'s output), or `None` when `path` holds no VAE config."""
    from diffusers import AutoencoderKL

    from .models.vae import SmallVAE

    for folder in (path, os.path.join(path, "vae")):
        config_path = os.path.join(folder, "config.json")
        if os.path.isfile(config_path):
            with open(config_path) as f:
                class_name = json.load(f).get("_class_name")
            classes = {"SmallVAE": SmallVAE, "AutoencoderKL": AutoencoderKL}
            if class_name in classes:
                return classes[class_name].from_pretrained(folder).eval()
    return None


def _model_name(model_path: str) -> str:
    """How metrics.json names the model: a local folder as an absolute path, a Hub id as it is."""
    return os.path.abspath(model_path) if os.path.isdir(model_path) else model_path


def _json_safe(value):
    """Strict JSON: non-finite floats (an infinite PSNR) become `None`."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _misses(target: dict, prediction: dict) -> Optional[str]:
    wrong = [
        f"{name}={prediction[name]}"
        for name, value in target.items()
        if name in prediction and not target_matches(prediction[name], value)
    ]
    return "read: " + ", ".join(wrong) if wrong else None


def parse_args(argv=None, prog: str | None = None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model_path",
        required=True,
        help="A pipeline folder (model_index.json + components), or a VAE folder to evaluate alone (train_vae.py's "
        "output): reconstructions only, no UNet. Local, or a Hub id (owner/name; offline: the HF cache).",
    )
    parser.add_argument("--output_dir", required=True, help="Where metrics.json and grid.png are written.")
    parser.add_argument("--task", choices=["cartoon-faces", "digits"], default="cartoon-faces")
    parser.add_argument("--num_images", type=int, default=500)
    parser.add_argument("--num_inference_steps", type=int, default=25)
    parser.add_argument("--guidance_scale", type=float, default=None, help="Default: the pipeline's default.")
    parser.add_argument(
        "--scheduler", default="dpm++", help="A name of sdscratch.schedulers ('dpm++', 'euler', ...) or 'saved'."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=25)
    parser.add_argument("--caption_style", choices=list(EVALUATION_SECTIONS), default="template")
    parser.add_argument("--classifier_path", default=None, help="A classifier folder; default: the shipped one.")
    parser.add_argument(
        "--grid_images",
        type=int,
        default=64,
        help="Generated images shown in grid.png (>= 1), or 0 for no grid.png.",
    )
    parser.add_argument(
        "--model_card",
        action="store_true",
        help="Also write the metrics, this command and the grid into the model card (README.md) of --model_path, "
        "replacing an earlier '## Evaluation' section.",
    )
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject flag values that would only fail after the whole evaluation (before anything is loaded)."""
    if args.num_images < 2:
        parser.error(f"--num_images must be >= 2 (the Frechet distance needs 2 images or more), got {args.num_images}")
    if args.grid_images < 0:
        parser.error(f"--grid_images must be >= 1, or 0 for no grid, got {args.grid_images}")
    if args.grid_images == 0 and args.model_card:
        parser.error("--model_card puts grid.png in the card: use --grid_images >= 1 with it")
    if args.model_card and not os.path.isdir(args.model_path):
        parser.error(
            f"--model_card writes into the README.md of --model_path, a folder: {args.model_path!r} is none (a Hub "
            "id's files in the HF cache are shared and must not change: evaluate a local copy, `hf download "
            f"{args.model_path} --local-dir <folder>`)"
        )
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.num_inference_steps < 1:
        parser.error(f"--num_inference_steps must be >= 1, got {args.num_inference_steps}")
    styles = TASK_CAPTION_STYLES[args.task]
    if args.caption_style not in styles:
        parser.error(f"--caption_style {args.caption_style!r} is not one of the {args.task} styles {list(styles)}")
    if args.scheduler != "saved":
        from .schedulers.registry import check_scheduler_name

        try:
            check_scheduler_name(args.scheduler)
        except ValueError as error:
            parser.error(f"--scheduler: {error} Or 'saved': the pipeline's own.")


def main(argv=None, prog: str = "python -m sdscratch.evaluate") -> dict:
    """The command line. `prog`: how the command is named in `--help` and in the model card (`sdscratch evaluate`
    when run through the `sdscratch` command)."""
    args = parse_args(argv, prog=prog)
    import sdscratch  # noqa: F401  (registers every component module, as diffusers' loading needs)
    from sdscratch.hub import PIPELINE_FILES, snapshot_folder
    from sdscratch.pipelines.pipeline_cartoon_face import CartoonFacePipeline
    from sdscratch.schedulers.registry import get_scheduler

    model_path = snapshot_folder(args.model_path, "--model_path", PIPELINE_FILES)  # a Hub id: its cached snapshot
    if not os.path.isfile(os.path.join(model_path, "model_index.json")):
        vae = load_vae_folder(model_path)
        if vae is None:
            raise ValueError(
                f"--model_path {args.model_path!r} is neither a pipeline folder (model_index.json) nor a VAE folder "
                "(a SmallVAE or AutoencoderKL config.json in it or in its vae/ subfolder)."
            )
        if args.model_card:
            raise ValueError("--model_card writes a pipeline's card; drop it to evaluate a VAE folder alone.")
        return _evaluate_vae_command(args, vae)
    pipeline = CartoonFacePipeline.from_pretrained(model_path)
    if args.scheduler != "saved":
        pipeline.scheduler = get_scheduler(args.scheduler, pipeline.scheduler.config)
    classifier_path = args.classifier_path or pretrained_classifier_path(args.task)
    classifier = load_classifier(classifier_path)
    metrics, outputs = evaluate_pipeline(
        pipeline,
        task=args.task,
        classifier=classifier,
        num_images=args.num_images,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
        batch_size=args.batch_size,
        caption_style=args.caption_style,
    )
    metrics = {"model_path": _model_name(args.model_path), "scheduler_name": args.scheduler, **metrics}
    classifier_metrics = os.path.join(classifier_path, "training_metrics.json")
    if os.path.isfile(classifier_metrics):
        with open(classifier_metrics) as f:
            metrics["classifier_held_out_accuracy"] = json.load(f)["held_out_accuracy"]

    _write_outputs(args, metrics, outputs)
    _print_summary(metrics)
    print(f"wrote {os.path.join(args.output_dir, 'metrics.json')}" + (" and grid.png" if args.grid_images else ""))
    if args.model_card:
        command = prog + " " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        card = update_model_card(
            args.model_path, metrics, command, os.path.join(args.output_dir, "grid.png"), args.caption_style
        )
        print(f"wrote the evaluation into {card}")
    return metrics


def model_card_section(metrics: dict, command: str, caption_style: str = "template") -> str:
    """The evaluation section of a model card ('## Evaluation' for template prompts, '## Evaluation with free-form
    prompts' for rich ones): every number of `metrics` and the command that made it."""
    adherence = metrics["adherence"]
    real = metrics.get("adherence_real_images", {})
    heading, grid = EVALUATION_SECTIONS[caption_style]
    prompts = "prompts covering every value" if caption_style == "template" else "free-form prompts"
    lines = [
        heading,
        "",
        f"{metrics['num_images']} images generated from {prompts} (caption style `{caption_style}`), "
        f"{metrics.get('num_inference_steps', '?')} steps of `{metrics['scheduler_name']}`, guidance scale "
        f"{metrics.get('guidance_scale', 'default')}; read back by the attribute classifier shipped with "
        "`sdscratch.evaluation` (docs/evaluation.md). Produced by:",
        "",
        f"```bash\n{command}\n```",
        "",
        "| attribute | adherence | classifier on real images | text encoder separation (fresh encoder) |",
        "|---|---|---|---|",
    ]
    separation = metrics.get("text_encoder_separation") or {}
    for name, accuracy in adherence["accuracy"].items():
        real_value = real.get(name)
        real_text = "n/a" if real_value is None else f"{100 * real_value:.2f}%"
        lines.append(f"| {name} | {100 * accuracy:.2f}% | {real_text} | {_separation_text(separation, name)} |")
    per_value = adherence.get("per_value_accuracy", {})
    if len(per_value) == 1:  # one attribute (digits): show every value
        ((name, values),) = per_value.items()
        lines += ["", f"| {name} | " + " | ".join(values) + " |", "|---" * (len(values) + 1) + "|"]
        lines.append("| adherence | " + " | ".join(f"{100 * v:.1f}%" for v in values.values()) + " |")
    fd = metrics["frechet_distance"]
    vae = "n/a" if fd["vae_reconstructions"] is None else f"{fd['vae_reconstructions']:.3f}"
    lines += [
        "",
        f"Frechet classifier distance: generated {fd['generated']:.3f}, VAE reconstructions {vae}, "
        f"real-vs-real floor {fd['real_floor']:.3f}.",
    ]
    if metrics.get("reconstruction"):
        r = metrics["reconstruction"]
        lines.append(
            f"VAE reconstruction on held-out images: PSNR {r['psnr']:.2f} dB, SSIM {similarity_text(r['ssim'])}."
        )
    lines += [
        "",
        f"{metrics['seconds_per_image']:.3f} s per image on this machine.",
        "",
        f"![evaluation grid](./{grid})",
    ]
    return "\n".join(lines) + "\n"


def _separation_text(separation: dict, name: str) -> str:
    value = separation.get("separation", {}).get(name)
    if value is None:
        return "n/a"
    reference = separation.get("random_init_separation", {}).get(name)
    return f"{value:.3f}" + ("" if reference is None else f" ({reference:.3f})")


# caption style -> (card heading, grid file): one section per kind of prompt, each replaced by its own re-run
EVALUATION_SECTIONS = {
    "template": ("## Evaluation", "evaluation_grid.png"),
    "rich": ("## Evaluation with free-form prompts", "evaluation_grid_free_form.png"),
    "mixed": ("## Evaluation with mixed prompts", "evaluation_grid_mixed.png"),
}


def update_model_card(
    model_path: str, metrics: dict, command: str, grid_path: str, caption_style: str = "template"
) -> str:
    """Writes (or replaces) the evaluation section of `model_path`/README.md for `caption_style` and copies the
    grid beside it; the sections of other caption styles stay.

    Both files are written under a temporary name and renamed, so a crash never leaves half a card.
    """
    heading, grid = EVALUATION_SECTIONS[caption_style]
    card_path = os.path.join(model_path, "README.md")
    text = ""
    if os.path.isfile(card_path):
        with open(card_path) as f:
            text = f.read()
    start = ("\n" + text + "\n").find("\n" + heading + "\n")  # the whole heading line, not a prefix
    if start >= 0:  # drop the old section (up to the next "## " heading)
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + (text[end + 1 :] if end >= 0 else "")
    text = text.rstrip() + "\n\n" + model_card_section(metrics, command, caption_style)
    for source, target in ((None, card_path), (grid_path, os.path.join(model_path, grid))):
        tmp = target + ".tmp"
        if source is None:
            with open(tmp, "w") as f:
                f.write(text)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return card_path


def _write_outputs(args, metrics: dict, outputs: dict) -> None:
    """metrics.json, then grid.png (the first `--grid_images` images, misread attributes in red; none for
    `--grid_images 0`) in --output_dir. Each is written under a temporary name and renamed, metrics first, so
    a failing grid never loses the metrics."""
    os.makedirs(args.output_dir, exist_ok=True)
    count = min(args.grid_images, len(outputs["prompts"]))
    metrics["grid"] = "grid.png" if count > 0 else None
    metrics_path = os.path.join(args.output_dir, "metrics.json")
    with open(metrics_path + ".tmp", "w") as f:
        json.dump(_json_safe(metrics), f, indent=2, allow_nan=False)
    os.replace(metrics_path + ".tmp", metrics_path)
    if count < 1:
        return
    highlights = [_misses(t, p) for t, p in zip(outputs["targets"][:count], outputs["predictions"][:count])]
    grid = captioned_grid(
        outputs["images"][:count], outputs["prompts"][:count], columns=min(8, count), highlights=highlights
    )
    grid_path = os.path.join(args.output_dir, "grid.png")
    grid.save(grid_path + ".tmp", format="PNG")
    os.replace(grid_path + ".tmp", grid_path)


def _evaluate_vae_command(args, vae) -> dict:
    classifier = load_classifier(args.classifier_path or pretrained_classifier_path(args.task))
    metrics, outputs = evaluate_vae(
        vae, args.task, classifier, args.num_images, args.seed, args.batch_size, args.caption_style
    )
    metrics = {"model_path": _model_name(args.model_path), "model_type": type(vae).__name__, **metrics}
    _write_outputs(args, metrics, outputs)
    for name, accuracy in metrics["adherence_vae_reconstructions"].items():
        real = metrics["adherence_real_images"].get(name, float("nan"))
        print(f"reconstructions' adherence {name:>14}: {100 * accuracy:6.2f}%   (real images {100 * real:6.2f}%)")
    fd, r = metrics["frechet_distance"], metrics["reconstruction"]
    print(
        f"Frechet classifier distance: VAE reconstructions {fd['vae_reconstructions']:.3f}, real floor {fd['real_floor']:.3f}"
    )
    print(
        f"VAE reconstruction: PSNR {r['psnr']:.2f} dB, SSIM {similarity_text(r['ssim'])}, MS-SSIM "
        f"{similarity_text(r['ms_ssim'])} ({r['ms_ssim_scales']} scales)"
    )
    grid = " and grid.png (reconstructions)" if args.grid_images else ""
    print(f"wrote {os.path.join(args.output_dir, 'metrics.json')}{grid}")
    return metrics


def _print_summary(metrics: dict) -> None:
    print(f"{metrics['num_images']} images, {metrics['seconds_per_image']:.3f} s/image")
    for name, accuracy in metrics["adherence"]["accuracy"].items():
        real = metrics["adherence_real_images"].get(name, float("nan"))
        separation = _separation_text(metrics.get("text_encoder_separation") or {}, name)
        print(
            f"adherence {name:>14}: {100 * accuracy:6.2f}%   (real images {100 * real:6.2f}%)   "
            f"text encoder separation {separation}"
        )
    fd = metrics["frechet_distance"]
    vae = "n/a" if fd["vae_reconstructions"] is None else f"{fd['vae_reconstructions']:.3f}"
    print(
        f"Frechet classifier distance: generated {fd['generated']:.3f}, VAE reconstructions {vae}, real floor {fd['real_floor']:.3f}"
    )
    if metrics["reconstruction"]:
        r = metrics["reconstruction"]
        print(
            f"VAE reconstruction: PSNR {r['psnr']:.2f} dB, SSIM {similarity_text(r['ssim'])}, MS-SSIM "
            f"{similarity_text(r['ms_ssim'])} ({r['ms_ssim_scales']} scales)"
        )


if __name__ == "__main__":
    main()
