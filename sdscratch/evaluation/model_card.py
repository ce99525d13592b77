"""The evaluation sections of a model card (README.md): every number of `metrics.json` and the command that made
it, one section per caption style and one per editing mode, written by `python -m sdscratch.evaluate --model_card`.
"""

from __future__ import annotations

import os
import shutil

from .reconstruction import similarity_text

# caption style -> (card heading, grid file): one section per kind of prompt, each replaced by its own re-run
EVALUATION_SECTIONS = {
    "template": ("## Evaluation", "evaluation_grid.png"),
    "rich": ("## Evaluation with free-form prompts", "evaluation_grid_free_form.png"),
    "mixed": ("## Evaluation with mixed prompts", "evaluation_grid_mixed.png"),
}
# editing mode (`--edit`) -> (card heading, grid file)
EDITING_SECTIONS = {
    "inpaint": ("## Evaluation of inpainting", "evaluation_grid_inpainting.png"),
    "img2img": ("## Evaluation of img2img", "evaluation_grid_img2img.png"),
}


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
    unnamed = metrics.get("unnamed_attributes") or {}
    if unnamed:
        lines += [
            "",
            "What the prompts leave open, per attribute: over the prompts that do not name it, the total variation "
            "distance between the values read in the generated images and in the real images for the same prompts "
            "(0: the same spread; sampling alone gives about 0.06-0.18, more for fewer prompts and more values; "
            "docs/evaluation.md), and the value drawn most often.",
            "",
            "| attribute left open | prompts | total variation | drawn most (generated / real images) |",
            "|---|---|---|---|",
        ]
        for name, balance in unnamed.items():
            lines.append(
                f"| {name} | {balance['count']} | {balance['total_variation']:.3f} | {_drawn_most_text(balance, ' / ')} |"
            )
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


def _drawn_most_text(balance: dict, between: str) -> str:
    """The value an `unnamed_attributes` entry's generated images show most, with its share there and in the real
    images: "green 50%{between}23%"."""
    generated, real = balance["generated"], balance["real_images"]
    top = max(generated, key=generated.get)
    return f"{top} {100 * generated[top]:.0f}%{between}{100 * real[top]:.0f}%"


def _separation_text(separation: dict, name: str) -> str:
    value = separation.get("separation", {}).get(name)
    if value is None:
        return "n/a"
    reference = separation.get("random_init_separation", {}).get(name)
    return f"{value:.3f}" + ("" if reference is None else f" ({reference:.3f})")


def editing_card_section(metrics: dict, command: str) -> str:
    """The card section of an editing evaluation (`evaluate_editing`'s metrics): success, preservation per
    attribute beside the VAE round trip's, PSNR of the kept region, and the command that made it."""
    heading, grid = EDITING_SECTIONS[metrics["mode"]]
    floor = metrics.get("vae_round_trip") or {}
    region = (
        f"the top {100 * metrics['mask_fraction']:.0f}% of the image (the hair) repainted"
        if metrics["mode"] == "inpaint"
        else "the whole image noised and denoised (SDEdit)"
    )
    lines = [
        heading,
        "",
        f"{metrics['num_images']} held-out built-in faces, each asked for one new hair colour (its own template "
        f"caption with the hair colour replaced; every colour asked for equally often), {region} at strength "
        f"{metrics['strength']}, {metrics['num_inference_steps']} steps of `{metrics.get('scheduler_name', '?')}`, "
        f"guidance scale {metrics.get('guidance_scale', 'default')}; the results and the originals read by the "
        'attribute classifier shipped with `sdscratch.evaluation` (docs/evaluation.md, "Editing"). Produced by:',
        "",
        f"```bash\n{command}\n```",
        "",
        f"Edit success (hair colour read as the one asked for): **{100 * metrics['edit_success']:.2f}%** "
        f"(hair colour left as it was: {100 * metrics['hair_color_unchanged']:.2f}%). Every other attribute "
        f"unchanged: {100 * metrics['all_preserved']:.2f}%; edited and every other attribute unchanged: "
        f"{100 * metrics['edited_and_all_preserved']:.2f}%.",
        "",
        "| attribute | unchanged by the edit | unchanged by the VAE round trip alone (strength 0) |",
        "|---|---|---|",
    ]
    for name, share in metrics["preservation"].items():
        reference = floor.get("preservation", {}).get(name)
        note = " (faces without sunglasses)" if name == "eye_color" else ""
        ref = "n/a" if reference is None else f"{100 * reference:.2f}%"
        lines.append(f"| {name}{note} | {'n/a' if share is None else f'{100 * share:.2f}%'} | {ref} |")
    values = metrics["edit_success_per_value"]
    lines += ["", "| hair colour asked for | " + " | ".join(values) + " |", "|---" * (len(values) + 1) + "|"]
    lines.append("| edit success | " + " | ".join(f"{100 * v:.0f}%" for v in values.values()) + " |")
    lines.append("")
    if metrics.get("kept_region_psnr") is not None:
        reference = floor.get("kept_region_psnr")
        ref = "" if reference is None else f" (the VAE round trip alone: {reference:.2f} dB)"
        lines.append(
            f"PSNR of the kept (unmasked) region against the original: {metrics['kept_region_psnr']:.2f} dB{ref}."
        )
    lines += [f"{metrics['seconds_per_image']:.3f} s per image on this machine.", "", f"![{heading[3:]}](./{grid})"]
    return "\n".join(lines) + "\n"


def update_model_card(
    model_path: str, metrics: dict, command: str, grid_path: str, caption_style: str = "template"
) -> str:
    """Writes (or replaces) the evaluation section of `model_path`/README.md for `caption_style` and copies the
    grid beside it; the sections of other caption styles stay.

    Both files are written under a temporary name and renamed, so a crash never leaves half a card.
    """
    heading, grid = EVALUATION_SECTIONS[caption_style]
    return replace_card_section(
        model_path, heading, model_card_section(metrics, command, caption_style), grid_path, grid
    )


def update_editing_card(model_path: str, metrics: dict, command: str, grid_path: str) -> str:
    """Writes (or replaces) the editing section of `model_path`/README.md for `metrics["mode"]` and its grid."""
    heading, grid = EDITING_SECTIONS[metrics["mode"]]
    return replace_card_section(model_path, heading, editing_card_section(metrics, command), grid_path, grid)


def replace_card_section(model_path: str, heading: str, section: str, grid_path: str, grid: str) -> str:
    """Replace the section under the line `heading` of `model_path`/README.md (up to the next "## " heading) by
    `section` where it stands, or append it; copy `grid_path` to `model_path`/`grid`. Returns the card's path.

    In place, so that the sections written by hand around it (limitations, notes) keep their order when the
    evaluation is run again."""
    card_path = os.path.join(model_path, "README.md")
    text = ""
    if os.path.isfile(card_path):
        with open(card_path, encoding="utf-8") as f:
            text = f.read()
    start = ("\n" + text + "\n").find("\n" + heading + "\n")  # the whole heading line, not a prefix
    if start >= 0:  # the old section (up to the next "## " heading) gives way to the new one
        end = text.find("\n## ", start + len(heading))
        before, after = text[:start].rstrip(), (text[end + 1 :] if end >= 0 else "")
        text = (before + "\n\n" if before else "") + section.rstrip("\n") + "\n" + ("\n" + after if after else "")
    else:
        text = text.rstrip() + "\n\n" + section
    for source, target in ((None, card_path), (grid_path, os.path.join(model_path, grid))):
        tmp = target + ".tmp"
        if source is None:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return card_path
