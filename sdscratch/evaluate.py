"""Evaluate a text-to-image pipeline folder: prompt adherence, Frechet classifier distance, VAE reconstruction,
and how well the text encoder separates the attribute words.

    python -m sdscratch.evaluate --model_path <pipeline folder> --output_dir eval/cartoon-faces \
        --num_images 500 --num_inference_steps 25 --guidance_scale 3 --scheduler dpm++ --seed 0
    python -m sdscratch.evaluate --model_path <digits pipeline folder> --output_dir eval/digits --task digits
    python -m sdscratch.evaluate --model_path <train_vae.py output folder> --output_dir eval/vae --num_images 512
    python -m sdscratch.evaluate --model_path <pipeline folder> --output_dir eval/inpaint --edit inpaint \
        --num_images 256 --num_inference_steps 25 --guidance_scale 3 --scheduler dpm++ --seed 0

A VAE folder alone (a `SmallVAE` or `AutoencoderKL` config in it or in its `vae/` subfolder, as `train_vae.py`
writes) is evaluated without a UNet: reconstruction error, the adherence of the reconstructions (what a UNet on
these latents can at best reach) and their Frechet distance, on the same held-out faces as a pipeline's. Its
`grid.png` shows reconstructions.

Writes `<output_dir>/metrics.json` and `<output_dir>/grid.png` (the first `--grid_images` generated images
with their prompts; the attributes the classifier read differently are written in red; `--grid_images 0`: no
grid). `--num_images` must be at least 2 (the Frechet distance fits a covariance). See
docs/evaluation.md for what each number means and its floor.

`--edit inpaint` / `--edit img2img` measures editing instead (`sdscratch.evaluation.evaluate_editing`): each
held-out face is asked for a new hair colour, repainting the top of the head (inpaint, `--strength` 1.0) or the
whole image (img2img, `--strength` 0.6); the classifier reads whether the hair colour changed as asked and the
other attributes did not. Its `grid.png` shows originals above their edits (16 faces unless `--grid_images`).

The evaluation itself is `sdscratch.evaluation.evaluate_pipeline` / `evaluate_vae`
(sdscratch/evaluation/pipeline_evaluation.py) and the card section `sdscratch/evaluation/model_card.py`; this
module is the command line around them (and still exports those names).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from typing import Optional

from .evaluation.adherence import TASK_CAPTION_STYLES, target_matches
from .evaluation.classifier import classifier_folder, load_classifier
from .evaluation.editing import EDIT_MODES, editing_grid, editing_summary, evaluate_editing
from .evaluation.grid import captioned_grid
from .evaluation.model_card import (
    EVALUATION_SECTIONS,
    _drawn_most_text,
    _separation_text,
    model_card_section,
    update_editing_card,
    update_model_card,
)
from .evaluation.pipeline_evaluation import evaluate_pipeline, evaluate_vae
from .evaluation.reconstruction import similarity_text

# The evaluation functions and the card writing moved to sdscratch.evaluation; re-exported here so that
# `from sdscratch.evaluate import evaluate_pipeline` (docs, existing code) keeps working.
__all__ = [
    "EVALUATION_SECTIONS",
    "check_args",
    "evaluate_pipeline",
    "evaluate_vae",
    "load_vae_folder",
    "main",
    "model_card_section",
    "parse_args",
    "update_model_card",
]


def load_vae_folder(path: str):
    """The VAE in `path` or `path/vae` (`train_vae.py`'s output), or `None` when `path` holds no VAE config."""
    from diffusers import AutoencoderKL

    from .models.vae import SmallVAE

    for folder in (path, os.path.join(path, "vae")):
        config_path = os.path.join(folder, "config.json")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
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
    parser.add_argument(
        "--edit",
        choices=list(EDIT_MODES),
        default=None,
        help="Measure editing instead of generation: each held-out face asked for a new hair colour by inpainting "
        "the top of the head or by img2img (cartoon-faces only).",
    )
    parser.add_argument(
        "--strength", type=float, default=None, help="With --edit, in (0, 1]; default 1.0 (inpaint), 0.6 (img2img)."
    )
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
        default=None,
        help="Generated images shown in grid.png (>= 1; default 64, with --edit 16 faces and their edits), or 0 for "
        "no grid.png.",
    )
    parser.add_argument(
        "--model_card",
        action="store_true",
        help="Also write the metrics, this command and the grid into the model card (README.md) of --model_path, "
        "replacing the earlier section of this --caption_style or --edit mode (the other sections stay).",
    )
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject flag values that would only fail after the whole evaluation (before anything is loaded)."""
    from .training_utils.flags import check_output_folder

    if args.grid_images is None:
        args.grid_images = 16 if args.edit else 64
    if args.edit:
        _check_edit_args(parser, args)
    elif args.strength is not None:
        parser.error("--strength is the strength of an edit: use it with --edit inpaint or --edit img2img")
    elif args.num_images < 2:
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
    if not args.output_dir:
        parser.error("--output_dir must name a folder, got ''")
    try:  # a file there: makedirs failed after the whole evaluation
        check_output_folder(args.output_dir)
    except ValueError as error:
        parser.error(str(error))
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.seed < 0:  # the reference faces are data set 10000 + 2 * seed: a negative one could be training faces
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:  # a folder, or a shipped classifier by task name (the task's own when the flag is left out)
        args.classifier_path = classifier_folder(args.classifier_path or args.task)
    except ValueError:
        parser.error(
            f"--classifier_path {args.classifier_path!r} is no classifier folder (no config.json): train one with "
            f"training/train_classifier.py, or leave the flag out for the shipped {args.task} classifier"
        )
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
        except ImportError as error:  # e.g. DPMSolverSDEScheduler without torchsde
            parser.error(f"--scheduler: {str(error).strip()}")


def _check_edit_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.task != "cartoon-faces":
        parser.error(f"--edit asks for a new hair colour, a cartoon-faces attribute: not with --task {args.task}")
    if args.caption_style != "template":
        parser.error(f"--edit prompts are template captions: not with --caption_style {args.caption_style}")
    if args.num_images < 1:
        parser.error(f"--num_images must be >= 1 with --edit, got {args.num_images}")
    strength = EDIT_MODES[args.edit] if args.strength is None else args.strength
    if not 0 < strength <= 1:
        parser.error(f"--strength must be in (0, 1] (0 returns the face unedited), got {args.strength}")
    if int(args.num_inference_steps * strength) < 1:
        parser.error(
            f"--num_inference_steps {args.num_inference_steps} at --strength {strength} runs no step: raise either"
        )


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
        if args.edit:
            raise ValueError("--edit needs a pipeline folder (model_index.json); a VAE folder alone cannot edit.")
        return _evaluate_vae_command(args, vae)
    pipeline = CartoonFacePipeline.from_pretrained(model_path)
    if args.scheduler != "saved":
        pipeline.scheduler = get_scheduler(args.scheduler, pipeline.scheduler.config)
    classifier = load_classifier(args.classifier_path)  # resolved by check_args
    if args.edit:  # inpainting / img2img of held-out faces (evaluation/editing.py)
        metrics, outputs = evaluate_editing(
            pipeline, args.edit, classifier, args.num_images, args.strength, args.num_inference_steps,
            args.guidance_scale, args.seed, args.batch_size,
        )  # fmt: skip
    else:
        metrics, outputs = evaluate_pipeline(
            pipeline, task=args.task, classifier=classifier, num_images=args.num_images,
            num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, seed=args.seed,
            batch_size=args.batch_size, caption_style=args.caption_style,
        )  # fmt: skip
    metrics = {"model_path": _model_name(args.model_path), "scheduler_name": args.scheduler, **metrics}
    classifier_metrics = os.path.join(args.classifier_path, "training_metrics.json")
    if os.path.isfile(classifier_metrics):
        with open(classifier_metrics, encoding="utf-8") as f:
            metrics["classifier_held_out_accuracy"] = json.load(f)["held_out_accuracy"]

    _write_outputs(args, metrics, outputs)
    if args.edit:
        print(editing_summary(metrics))
    else:
        _print_summary(metrics)
    print(f"wrote {os.path.join(args.output_dir, 'metrics.json')}" + (" and grid.png" if args.grid_images else ""))
    if args.model_card:
        command = prog + " " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        grid = os.path.join(args.output_dir, "grid.png")
        if args.edit:
            card = update_editing_card(args.model_path, metrics, command, grid)
        else:
            card = update_model_card(args.model_path, metrics, command, grid, args.caption_style)
        print(f"wrote the evaluation into {card}")
    return metrics


def _write_outputs(args, metrics: dict, outputs: dict) -> None:
    """metrics.json, then grid.png (the first `--grid_images` images, misread attributes in red; with `--edit`,
    originals above their edits; none for `--grid_images 0`) in --output_dir. Each is written under a temporary
    name and renamed, metrics first, so a failing grid never loses the metrics."""
    os.makedirs(args.output_dir, exist_ok=True)
    count = min(args.grid_images, len(outputs["prompts"]))
    metrics["grid"] = "grid.png" if count > 0 else None
    metrics_path = os.path.join(args.output_dir, "metrics.json")
    with open(metrics_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(_json_safe(metrics), f, indent=2, allow_nan=False)
    os.replace(metrics_path + ".tmp", metrics_path)
    if count < 1:
        return
    if "originals" in outputs:  # an editing evaluation
        grid = editing_grid(outputs, count)
    else:
        highlights = [_misses(t, p) for t, p in zip(outputs["targets"][:count], outputs["predictions"][:count])]
        grid = captioned_grid(
            outputs["images"][:count], outputs["prompts"][:count], columns=min(8, count), highlights=highlights
        )
    grid_path = os.path.join(args.output_dir, "grid.png")
    grid.save(grid_path + ".tmp", format="PNG")
    os.replace(grid_path + ".tmp", grid_path)


def _evaluate_vae_command(args, vae) -> dict:
    classifier = load_classifier(args.classifier_path)
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
    for name, balance in (metrics.get("unnamed_attributes") or {}).items():
        print(
            f"unnamed {name:>16}: total variation {balance['total_variation']:.3f} from the real images "
            f"({balance['count']} prompts leave it open; most drawn: {_drawn_most_text(balance, ', real ')})"
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
