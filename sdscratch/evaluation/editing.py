"""Editing: how well a cartoon-faces pipeline changes one attribute of a real face and keeps the rest.

Each held-out face (the same faces the other evaluations use as real images, `held_out_faces`) is asked for ONE
change: a new hair colour, different from its own. The prompt is the face's own template caption with the hair
colour replaced (as `examples/inpaint.py` builds it). Two modes:

- "inpaint": the top of the head is repainted (`top_mask`, the example's mask), from pure noise (strength 1.0);
- "img2img": the whole image is noised to `strength` (0.6) and denoised (SDEdit).

The shipped attribute classifier reads every result back and the original face too. Edit success: the share of
results read as the requested hair colour (per requested value as well). Preservation: per other attribute, the
share of results read as the original face was read (so the classifier's own errors on the original cancel;
eye colour on faces without sunglasses only, as sunglasses hide the eyes).
Inpainting also reports the PSNR of the kept (unmasked) region against the original; both modes report the
same numbers for the VAE round trip alone (the pipeline at strength 0: what no edit can beat).
"""

from __future__ import annotations

import numbers
import time
from collections import defaultdict
from typing import Optional

import numpy as np

from ..data.cartoon_faces import ATTRIBUTES, make_caption
from ..demo import TOP_MASK_FRACTION, top_mask
from .adherence import generate_images
from .classifier import AttributeClassifier, load_classifier
from .grid import captioned_grid
from .reconstruction import reconstruct_images
from .references import check_evaluation_seed, check_integers, held_out_faces

# mode -> default strength: inpainting repaints the masked region from pure noise, img2img keeps the layout
EDIT_MODES = {"inpaint": 1.0, "img2img": 0.6}
EDITED_ATTRIBUTE = "hair_color"


def edit_targets(attributes_list: list[dict], seed: int = 0) -> list[str]:
    """A new hair colour for each face, never its own, every value requested equally often.

    `held_out_faces` gives each aligned block of 10 faces the 10 hair colours once each; shifting the colours of
    a block by the same `1..9` steps (a different shift from block to block) keeps every target different from
    the face's own and requests each colour once per block.
    """
    values = ATTRIBUTES[EDITED_ATTRIBUTE]
    targets = []
    for i, attributes in enumerate(attributes_list):
        shift = 1 + (i // len(values) + seed) % (len(values) - 1)  # 1..9
        targets.append(values[(values.index(attributes[EDITED_ATTRIBUTE]) + shift) % len(values)])
    return targets


def edit_prompts(attributes_list: list[dict], targets: list[str]) -> list[str]:
    """Each face's own template caption with the hair colour replaced by its target."""
    return [make_caption({**a, EDITED_ATTRIBUTE: target}) for a, target in zip(attributes_list, targets)]


def check_editing_arguments(pipeline, mode: str, num_images: int, strength: float, num_inference_steps: int) -> None:
    """Raise a `ValueError` naming the argument and what is allowed, before anything is drawn."""
    if mode not in EDIT_MODES:
        raise ValueError(f"mode must be one of {list(EDIT_MODES)}, got {mode!r}")
    if not isinstance(strength, numbers.Real) or isinstance(strength, bool) or not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] (0 would return the face unedited), got {strength!r}")
    check_integers(num_images=num_images, num_inference_steps=num_inference_steps)
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if num_inference_steps < 1 or int(num_inference_steps * strength) < 1:
        raise ValueError(
            f"num_inference_steps * strength must give at least one step, got num_inference_steps="
            f"{num_inference_steps} and strength={strength}"
        )
    vae, unet = getattr(pipeline, "vae", None), getattr(pipeline, "unet", None)
    channels = getattr(getattr(vae if vae is not None else unet, "config", None), "out_channels", None)
    if channels is not None and channels != 3:
        raise ValueError(
            f"pipeline must be a cartoon-faces pipeline (RGB images); this one draws {channels}-channel images "
            "(a digits model?): editing asks for a new hair colour, which only the cartoon-faces task has"
        )


def _image_size(pipeline) -> int:
    """The resolution the model was trained at (the UNet's sample size times the VAE's factor)."""
    return int(pipeline.unet.config.sample_size * getattr(pipeline, "vae_scale_factor", 1))


def kept_region_psnr(images: np.ndarray, originals: np.ndarray, keep: np.ndarray) -> float:
    """Mean over images of the PSNR (dB, pixels in [0, 1]) on the pixels where `keep` `(H, W)` is True.

    `images`, `originals`: float `(N, H, W, C)` in [0, 1]. An exact copy gives `inf`.
    """
    error = (images.astype(np.float64) - originals.astype(np.float64)) ** 2  # (N, H, W, C)
    mse = error[:, keep].mean(axis=(1, 2))  # (N,)
    with np.errstate(divide="ignore"):
        return float(np.mean(10 * np.log10(1.0 / mse)))


def _read_changes(originals: list[dict], results: list[dict], names: list[str]) -> dict:
    """Per attribute of `names`: the share of `results` read as their original was. Eye colour counts only the
    faces whose original is read without sunglasses: the generator paints the lenses opaque, so the classifier
    reads the eye colour behind them at chance (docs/evaluation.md) and a change there would be noise."""
    shares = {}
    for name in names:
        pairs = [(o, r) for o, r in zip(originals, results) if name != "eye_color" or o.get("glasses") != "sunglasses"]
        shares[name] = float(np.mean([o[name] == r[name] for o, r in pairs])) if pairs else None
    return shares


def evaluate_editing(
    pipeline,
    mode: str = "inpaint",
    classifier: Optional[AttributeClassifier] = None,
    num_images: int = 256,
    strength: Optional[float] = None,
    num_inference_steps: int = 25,
    guidance_scale: Optional[float] = None,
    seed: int = 0,
    batch_size: int = 25,
) -> tuple[dict, dict]:
    """Edit success and preservation of a cartoon-faces pipeline's inpainting or img2img.

    Args:
        pipeline: A cartoon-faces `CartoonFacePipeline` (or anything with its `__call__`, `image=`, `strength=`,
            `mask_image=`, and a `unet` whose `config.sample_size` times `vae_scale_factor` is the image size).
        mode (`str`, defaults to "inpaint"): "inpaint" (repaint the top of the head, `top_mask`) or "img2img"
            (the whole image).
        classifier (`AttributeClassifier`, *optional*): Defaults to the shipped cartoon-faces one.
        num_images (`int`, defaults to 256): Faces edited (one edit each), at least 1.
        strength (`float`, *optional*): In (0, 1]; defaults to 1.0 for "inpaint" and 0.6 for "img2img".
        num_inference_steps (`int`, defaults to 25): Steps of the full schedule (`strength` runs a share of them).
        guidance_scale (`float`, *optional*): `None` keeps the pipeline's default.
        seed (`int`, defaults to 0): Picks the held-out faces (as every evaluation's `seed`), the targets and the
            noise (image `i` is seeded `seed * 1_000_003 + i`).
        batch_size (`int`, defaults to 25): Faces per pipeline call.

    Returns:
        `(metrics, outputs)`: a JSON-able dict (docs/evaluation.md, "Editing"), and `outputs` with `originals` and
        `images` (float `(N, H, W, C)` in [0, 1]), `prompts`, `targets`, `original_predictions`, `predictions`.
    """
    # 1. Check inputs (before any face is drawn)
    strength = EDIT_MODES.get(mode, 1.0) if strength is None else strength
    check_editing_arguments(pipeline, mode, num_images, strength, num_inference_steps)
    check_integers(batch_size=batch_size)
    check_evaluation_seed(seed)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    classifier = classifier if classifier is not None else load_classifier("cartoon-faces")
    if EDITED_ATTRIBUTE not in classifier.attribute_names:
        raise ValueError(
            f"classifier must read {EDITED_ATTRIBUTE!r} (a cartoon-faces classifier); this one reads "
            f"{list(classifier.attribute_names)}"
        )
    start = time.perf_counter()

    # 2. The held-out faces, a new hair colour for each, and the prompts asking for it
    size = _image_size(pipeline)
    attributes_list, faces = held_out_faces(num_images, seed=seed, size=size)  # faces: (N, 3, H, W) in [-1, 1]
    targets = edit_targets(attributes_list, seed)
    prompts = edit_prompts(attributes_list, targets)
    mask = top_mask(size, TOP_MASK_FRACTION) if mode == "inpaint" else None

    # 3. Edit
    edit_start = time.perf_counter()
    edit_kwargs = {"strength": strength} if mask is None else {"strength": strength, "mask_image": mask}
    images = generate_images(  # (N, H, W, C) in [0, 1]; the faces go in as the pipeline takes them, in [0, 1]
        pipeline, prompts, num_inference_steps, guidance_scale, seed, batch_size, image=(faces + 1) / 2, **edit_kwargs
    )
    seconds_per_image = (time.perf_counter() - edit_start) / num_images

    # 4. Read the originals and the results back
    names = classifier.attribute_names
    original_predictions = classifier.decode_predictions(classifier.classify(faces)[0])
    predictions = classifier.decode_predictions(classifier.classify(images)[0])
    others = [name for name in names if name != EDITED_ATTRIBUTE]

    # 5. Edit success (overall and per requested value) and preservation of every other attribute
    hits, per_value = [], defaultdict(list)
    for prediction, target in zip(predictions, targets):
        hits.append(prediction[EDITED_ATTRIBUTE] == target)
        per_value[target].append(hits[-1])
    kept = [  # every other attribute unchanged (eye colour only where no sunglasses hide it, as `_read_changes`)
        all(o[n] == p[n] for n in others if n != "eye_color" or o.get("glasses") != "sunglasses")
        for o, p in zip(original_predictions, predictions)
    ]
    originals = ((faces + 1) / 2).permute(0, 2, 3, 1).numpy()  # (N, H, W, C) in [0, 1]
    keep = np.asarray(mask) < 128 if mask is not None else None  # (H, W): the pixels inpainting keeps

    # 6. The floor: the VAE round trip alone (the pipeline at strength 0) read and compared the same way
    vae_round_trip = None
    if getattr(pipeline, "vae", None) is not None:
        reconstructions = reconstruct_images(pipeline.vae, faces, batch_size=batch_size)
        read = classifier.decode_predictions(classifier.classify(reconstructions)[0])
        round_trip = ((reconstructions + 1) / 2).permute(0, 2, 3, 1).numpy()
        vae_round_trip = {
            "preservation": _read_changes(original_predictions, read, others),
            "hair_color_unchanged": _read_changes(original_predictions, read, [EDITED_ATTRIBUTE])[EDITED_ATTRIBUTE],
            "kept_region_psnr": kept_region_psnr(round_trip, originals, keep) if keep is not None else None,
        }

    metrics = {
        "task": "cartoon-faces",
        "mode": mode,
        "edited_attribute": EDITED_ATTRIBUTE,
        "num_images": num_images,
        "strength": float(strength),
        "mask_fraction": TOP_MASK_FRACTION if mode == "inpaint" else None,
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale if guidance_scale is not None else getattr(pipeline, "_guidance_scale", None),
        "scheduler": type(getattr(pipeline, "scheduler", None)).__name__,
        "seed": seed,
        "image_size": size,
        "edit_success": float(np.mean(hits)),
        "edit_success_per_value": {
            v: float(np.mean(per_value[v])) for v in ATTRIBUTES[EDITED_ATTRIBUTE] if v in per_value
        },
        "edit_count_per_value": {v: len(per_value[v]) for v in ATTRIBUTES[EDITED_ATTRIBUTE] if v in per_value},
        "hair_color_unchanged": _read_changes(original_predictions, predictions, [EDITED_ATTRIBUTE])[EDITED_ATTRIBUTE],
        "preservation": _read_changes(original_predictions, predictions, others),
        "all_preserved": float(np.mean(kept)),
        "edited_and_all_preserved": float(np.mean([h and k for h, k in zip(hits, kept)])),
        "kept_region_psnr": kept_region_psnr(images, originals, keep) if keep is not None else None,
        "classifier_on_originals": {
            name: float(np.mean([p[name] == a[name] for p, a in zip(original_predictions, attributes_list)]))
            for name in names
        },
        "vae_round_trip": vae_round_trip,
        "seconds_per_image": seconds_per_image,
        "total_seconds": time.perf_counter() - start,
    }
    outputs = {
        "originals": originals,
        "images": images,
        "prompts": prompts,
        "targets": targets,
        "original_predictions": original_predictions,
        "predictions": predictions,
    }
    return metrics, outputs


def editing_grid(outputs: dict, count: int, columns: int = 8, tile_size: int = 96):
    """Rows of originals, each above the row of their edits: the hair colour read on the original, the one asked
    for under the edit, and in red what the classifier read differently (the hair colour against the target, the
    other attributes against the original's reading, eye colour not behind sunglasses; as much as fits one line).

    Returns:
        `PIL.Image.Image`: a 256-colour palette image (the faces need no more; a third of the RGB PNG's size).
    """
    count = min(count, len(outputs["images"]))
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    images, captions, highlights = [], [], []
    for block in range(0, count, columns):
        indices = range(block, min(block + columns, count))
        for i in indices:
            own = outputs["original_predictions"][i][EDITED_ATTRIBUTE]
            images.append(outputs["originals"][i])
            captions.append(f"original: {own} hair")
            highlights.append(None)
        for i in indices:
            original, prediction = outputs["original_predictions"][i], outputs["predictions"][i]
            target = outputs["targets"][i]
            misses = [] if prediction[EDITED_ATTRIBUTE] == target else [f"hair={prediction[EDITED_ATTRIBUTE]}"]
            hidden = {EDITED_ATTRIBUTE} | ({"eye_color"} if original.get("glasses") == "sunglasses" else set())
            misses += [f"{n}={v}" for n, v in prediction.items() if n not in hidden and original[n] != v]
            images.append(outputs["images"][i])
            captions.append(f"-> {target} hair")
            highlights.append(", ".join(misses) if misses else None)
        for _ in range(columns - len(indices)):  # pad a short last block so the edits stay under their originals
            images.append(np.ones_like(outputs["images"][0]))
            captions.append("")
            highlights.append(None)
    grid = captioned_grid(images, captions, columns, tile_size, caption_lines=2, highlights=highlights)
    return grid.quantize(256)


def editing_summary(metrics: dict) -> str:
    """The lines `python -m sdscratch.evaluate --edit` prints."""
    floor = metrics.get("vae_round_trip") or {}
    lines = [
        f"{metrics['mode']}: {metrics['num_images']} faces, strength {metrics['strength']}, "
        f"{metrics['seconds_per_image']:.3f} s/image",
        f"edit success (hair colour as asked): {100 * metrics['edit_success']:.2f}%   "
        f"(hair colour unchanged: {100 * metrics['hair_color_unchanged']:.2f}%)",
        "  per requested colour: "
        + ", ".join(f"{v} {100 * a:.0f}%" for v, a in metrics["edit_success_per_value"].items()),
        f"all other attributes preserved: {100 * metrics['all_preserved']:.2f}%   edited and all preserved: "
        f"{100 * metrics['edited_and_all_preserved']:.2f}%",
    ]
    for name, share in metrics["preservation"].items():
        reference = floor.get("preservation", {}).get(name)
        ref = "" if reference is None else f"   (VAE round trip alone {100 * reference:6.2f}%)"
        lines.append(f"preserved {name:>14}: {'n/a' if share is None else f'{100 * share:6.2f}%'}{ref}")
    if metrics["kept_region_psnr"] is not None:
        reference = floor.get("kept_region_psnr")
        ref = "" if reference is None else f" (VAE round trip alone {reference:.2f} dB)"
        lines.append(f"kept region PSNR: {metrics['kept_region_psnr']:.2f} dB{ref}")
    return "\n".join(lines)
