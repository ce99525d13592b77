"""Copy a trained pipeline folder into the package as a shipped model, stored in float16.

    python training/export_pretrained.py --model_path outputs/digits --name digits

Writes `sdscratch/pretrained/<name>/` (model_index.json, one folder per component, the model card and its
images). The weights are stored in float16 to stay small; `CartoonFacePipeline.from_pretrained` upcasts them to
float32 (fp16 has no fast path on most CPUs). The folder is written under a temporary name and renamed, so an
interrupted export never leaves a half model that `sdscratch.pretrained()` would load. Run
`python -m sdscratch.evaluate --model_path sdscratch/pretrained/<name> ... --model_card` afterwards, so that the
card's numbers are those of the stored fp16 weights.
"""

import argparse
import os
import shutil

import torch

import sdscratch
from sdscratch import CartoonFacePipeline
from sdscratch.pretrained import PRETRAINED_DIR, PRETRAINED_MODELS

CARD_FILES = ("README.md",)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", required=True, help="A pipeline folder written by train_unet.py.")
    parser.add_argument("--name", required=True, choices=sorted(PRETRAINED_MODELS), help="The shipped model's name.")
    parser.add_argument("--output_root", default=str(PRETRAINED_DIR), help="Where shipped models live.")
    parser.add_argument(
        "--vae_path",
        default=None,
        help="The train_vae.py output folder the pipeline's VAE came from: its card's training section (data, "
        "steps, wall time, command, held-out metrics) is added to the exported card as '## VAE training'.",
    )
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if not os.path.isfile(os.path.join(args.model_path, "model_index.json")):
        raise ValueError(f"--model_path {args.model_path!r} is not a pipeline folder (no model_index.json).")
    if args.vae_path is not None and not os.path.isfile(os.path.join(args.vae_path, "README.md")):
        raise ValueError(f"--vae_path {args.vae_path!r} has no README.md (expected train_vae.py's output folder).")
    pipeline = CartoonFacePipeline.from_pretrained(args.model_path)
    target = os.path.join(args.output_root, args.name)
    tmp = target + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    # the model card and the images it shows (validation grids), relative paths kept
    for name in CARD_FILES:
        if os.path.isfile(os.path.join(args.model_path, name)):
            shutil.copyfile(os.path.join(args.model_path, name), os.path.join(tmp, name))
    validation = os.path.join(args.model_path, "validation")
    if os.path.isdir(validation):
        last = sorted(os.listdir(validation))[-1:]  # the final grid only: the card shows it
        os.makedirs(os.path.join(tmp, "validation"))
        for name in last:
            shutil.copyfile(os.path.join(validation, name), os.path.join(tmp, "validation", name))
    if args.vae_path is not None:
        append_vae_training(os.path.join(tmp, "README.md"), os.path.join(args.vae_path, "README.md"))
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.replace(tmp, target)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(target) for f in files)
    print(f"wrote {target} ({size / 1e6:.2f} MB, float16 weights; sdscratch {sdscratch.__version__})")
    return target


def append_vae_training(card_path: str, vae_card_path: str) -> None:
    """Adds the VAE card's "## Training" and "## Metrics" sections to the pipeline card as "## VAE training", so
    that one card says how every trained part was made (and what the whole training cost)."""
    if not os.path.isfile(vae_card_path):
        raise ValueError(f"--vae_path: no model card at {vae_card_path} (expected train_vae.py's output folder).")
    with open(vae_card_path) as f:
        vae_card = f.read()
    sections = vae_card.split("\n## ")
    kept = [s for s in sections[1:] if s.startswith(("Training\n", "Metrics\n"))]
    if not kept:
        raise ValueError(f"--vae_path: {vae_card_path} has no '## Training' section.")
    body = "\n\n".join("### VAE " + s.strip()[0].lower() + s.strip()[1:] for s in kept)
    card = open(card_path).read() if os.path.isfile(card_path) else ""
    card = card.rstrip() + "\n\n## VAE training\n\n" + body.replace("\n## ", "\n### ") + "\n"
    with open(card_path, "w") as f:
        f.write(card)


if __name__ == "__main__":
    main()
