"""Copy a trained pipeline folder into the package as a shipped model, stored in float16.

    python training/export_pretrained.py --model_path outputs/digits --name digits
    python training/export_pretrained.py --model_path outputs/cartoon-faces/pipeline --name cartoon-faces \
        --vae_path outputs/cartoon-faces/vae outputs/cartoon-faces/vae-decoder \
        --text_encoder_path outputs/cartoon-faces/clip

Writes `sdscratch/pretrained/<name>/` of this repository (model_index.json, one folder per component, the model
card and its images): the folder setup.cfg packages and the recipes then evaluate, also when sdscratch is installed
from a wheel (its copy in site-packages is left alone). The weights are stored in float16 to stay small;
`CartoonFacePipeline.from_pretrained` upcasts them to float32 (fp16 has no fast path on most CPUs). The folder is
written as `.<name>.tmp`, the previous model moved aside to `.<name>.old` and the new one renamed into place (atomic
renames), then the old one deleted, so an interrupted export never leaves a half model that `sdscratch.pretrained()`
would load. The temporaries are hidden (setup.cfg's package_data globs skip dot names), so even a killed export's
leftover is never packaged; the next export removes it. Run
`python -m sdscratch.evaluate --model_path sdscratch/pretrained/<name> ... --model_card` afterwards, so that the
card's numbers are those of the stored fp16 weights.
"""

import argparse
import json
import os
import re
import shlex
import shutil
from typing import Optional

import torch

import sdscratch
from sdscratch import CartoonFacePipeline, SmallVAE, load_text_components
from sdscratch.pretrained import PRETRAINED_MODELS
from sdscratch.training_utils import load_frozen_vae, nearest_existing_path

CARD_FILES = ("README.md",)
ENCODER_SIDE = ("encoder.", "quant_conv.")  # what makes the latents a UNet was trained on
# the repository's shipped models (what setup.cfg packages), not `sdscratch.pretrained.PRETRAINED_DIR`: with sdscratch
# installed from a wheel that is site-packages, where pip does not track the files and the recipes do not look
REPO_PRETRAINED_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sdscratch", "pretrained"
)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command-line flags (`argv`, default `sys.argv[1:]`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", required=True, help="A pipeline folder written by train_unet.py.")
    parser.add_argument("--name", required=True, choices=sorted(PRETRAINED_MODELS), help="The shipped model's name.")
    parser.add_argument(
        "--output_root",
        default=REPO_PRETRAINED_DIR,
        help="Where shipped models live (default: this repository's sdscratch/pretrained, what setup.cfg packages).",
    )
    parser.add_argument(
        "--vae_path",
        nargs="+",
        default=None,
        help="The train_vae.py output folder(s) the pipeline's VAE came from, in training order (e.g. the VAE run, "
        "then a --train_decoder_only fine-tune of it): each card's training section (data, steps, wall time, "
        "command, held-out metrics) is added to the exported card under '## VAE training', and the last folder's "
        "vae/ is the one shipped. Its encoder and scaling_factor must be the pipeline's (the UNet learned those "
        "latents), so only a decoder fine-tuned after the UNet can be swapped in.",
    )
    parser.add_argument(
        "--text_encoder_path",
        default=None,
        help="The train_clip.py output folder whose text encoder the pipeline's UNet was trained on "
        "(train_unet.py --pretrained_text_encoder): its card's training section and zero-shot metrics are added to "
        "the exported card under '## Text encoder training'. Its tokenizer must be the pipeline's, and its text "
        "encoder too: the same weights when the encoder was frozen, the same architecture when the UNet run "
        "fine-tuned it (--train_text_encoder, read from the run's card).",
    )
    return parser.parse_args(argv)


def compute_in_float32(config_path: str) -> None:
    """Mark a transformers model stored in float16 as computing in float32 (`"dtype": "float32"` in its config).

    transformers 5 loads a model in the dtype its config names, so `CLIPTextModel.from_pretrained` would give
    float16 (no fast path on most CPUs) while diffusers loads the UNet and VAE in float32: a pipeline assembled
    from the parts (e.g. `StableDiffusionPipeline`) then fails on mixed dtypes. The weights stay float16 on disk.
    """
    if not os.path.isfile(config_path):
        return
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    config["dtype"] = "float32"
    write_json(config_path, config)


def write_json(path: str, config: dict) -> None:
    """`config` as diffusers and transformers write configs (2-space indent, sorted keys), via a temporary file."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def drop_name_or_path(folder: str) -> None:
    """Removes `_name_or_path` from the exported folder's JSON configs: `save_pretrained` writes the folder each part
    was loaded from (a path on the machine that trained it), which means nothing in the shipped package."""
    for root, _, files in os.walk(folder):
        for name in files:
            if not name.endswith(".json"):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            if not isinstance(config, dict) or "_name_or_path" not in config:
                continue
            del config["_name_or_path"]
            write_json(path, config)


def check_paths(args: argparse.Namespace) -> None:
    """Checks every folder argument before anything is loaded or written: a clear `ValueError` naming the flag.

    `--model_path` must be a pipeline folder (train_unet.py's output), each `--vae_path` a train_vae.py output folder
    (see `check_vae_run`), `--text_encoder_path` a folder with a model card, and `--output_root` a directory or a
    path that can be created as one (it is created only when the export is written).
    """
    if not os.path.isdir(args.model_path):
        raise ValueError(f"--model_path {args.model_path!r} does not exist or is not a folder.")
    if not os.path.isfile(os.path.join(args.model_path, "model_index.json")):
        raise ValueError(f"--model_path {args.model_path!r} is not a pipeline folder (no model_index.json).")
    for path in args.vae_path or []:
        check_vae_run(path)
    check_vae_stage_order(args.vae_path or [])
    if args.text_encoder_path:
        check_clip_run(args.text_encoder_path)
    check_output_root(args.output_root)


def check_clip_run(path: str) -> None:
    """Raises a `ValueError` naming `--text_encoder_path` unless `path` is a folder with a model card and no
    `model_index.json`, as train_clip.py writes (a pipeline folder's card describes its UNet run: it must not become
    the "Text encoder training" section)."""
    expected = "expected train_clip.py's output folder"
    if not os.path.isdir(path):
        raise ValueError(f"--text_encoder_path {path!r} does not exist or is not a folder ({expected}).")
    if os.path.isfile(os.path.join(path, "model_index.json")):
        raise ValueError(
            f"--text_encoder_path {path!r} is a pipeline folder (it has a model_index.json: train_unet.py's output?); "
            f"{expected}."
        )
    if not os.path.isfile(os.path.join(path, "README.md")):
        raise ValueError(f"--text_encoder_path {path!r} has no README.md ({expected}).")
    training_sections(os.path.join(path, "README.md"), "--text_encoder_path")


def check_vae_run(path: str) -> None:
    """Raises a `ValueError` naming `--vae_path` unless `path` is a train_vae.py output folder: a `vae/` subfolder
    holding a SmallVAE config, the `reconstruction_metrics.json` and `README.md` train_vae.py writes, and no
    `model_index.json` (a train_unet.py pipeline folder also has a `vae/` and a card, but its card describes the UNet
    run: it must not become the "VAE training" section)."""
    expected = "expected train_vae.py's output folder"
    if not os.path.isdir(path):
        raise ValueError(f"--vae_path {path!r} does not exist or is not a folder ({expected}).")
    if os.path.isfile(os.path.join(path, "model_index.json")):
        raise ValueError(
            f"--vae_path {path!r} is a pipeline folder (it has a model_index.json: train_unet.py's output?); "
            f"{expected}, with a vae/ subfolder and reconstruction_metrics.json."
        )
    config_path = os.path.join(path, "vae", "config.json")
    class_name = None
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                class_name = json.load(f).get("_class_name")
        except (OSError, ValueError, AttributeError):
            class_name = None
    if class_name != "SmallVAE":
        raise ValueError(f"--vae_path {path!r} has no SmallVAE in a vae/ subfolder ({expected}).")
    for name in ("reconstruction_metrics.json", "README.md"):
        if not os.path.isfile(os.path.join(path, name)):
            raise ValueError(f"--vae_path {path!r} has no {name} ({expected}).")
    training_sections(os.path.join(path, "README.md"), "--vae_path")


def check_vae_stage_order(paths: list[str]) -> None:
    """Raises a `ValueError` naming `--vae_path` when its runs are not in training order: a later stage fine-tunes the
    one before it (`--pretrained_vae_model_name_or_path` in the command its card records). A reversed order shipped
    the earlier decoder, with the cards' stage titles swapped. A stage whose parent is not among the paths (a moved
    folder, a run copied from another machine) cannot be checked and is taken as given."""
    resolved = [os.path.realpath(path) for path in paths]
    for k, path in enumerate(paths):
        command = card_command(os.path.join(path, "README.md"), "train_vae.py")
        if command is None:
            continue
        parent = flag_value(command, "--pretrained_vae_model_name_or_path")
        if parent is None:
            if k > 0:
                raise ValueError(
                    f"--vae_path: stage {k + 1} ({path!r}) trained a VAE from scratch (its card's command has no "
                    "--pretrained_vae_model_name_or_path); only the first stage can: list the runs in training "
                    "order, the first one, then each fine-tune after the run it started from."
                )
            continue
        parent_real = os.path.realpath(parent)
        if parent_real in resolved and (k == 0 or parent_real != resolved[k - 1]):
            j = resolved.index(parent_real)
            raise ValueError(
                f"--vae_path: stage {k + 1} ({path!r}) was fine-tuned from {parent!r}, given as stage {j + 1}: list "
                "the runs in training order, each fine-tune right after the run it started from."
            )


def card_command(card_path: str, script: str) -> Optional[list[str]]:
    """The command a training run's card records (`accelerate launch training/<script> ...`), split into words as
    the shell would; `None` when the card has none (or it cannot be split)."""
    if not os.path.isfile(card_path):
        return None
    with open(card_path, encoding="utf-8") as f:
        lines = [line for line in f if line.startswith(f"accelerate launch training/{script} ")]
    try:
        return shlex.split(lines[0]) if lines else None
    except ValueError:
        return None


def flag_value(words: list[str], flag: str) -> Optional[str]:
    """The value of `flag` in a split command line (`--flag value` or `--flag=value`), or `None`."""
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(flag + "="):
            return word[len(flag) + 1 :]
    return None


def training_sections(card_path: str, flag: str) -> list[str]:
    """The "## Training" and "## Metrics" sections of a training run's card (their text after the heading marks);
    a `ValueError` naming `flag` when it has neither."""
    with open(card_path, encoding="utf-8") as f:
        sections = f.read().split("\n## ")
    kept = [s for s in sections[1:] if s.startswith(("Training\n", "Metrics\n"))]
    if not kept:
        raise ValueError(f"{flag}: {card_path} has no '## Training' section.")
    return kept


def check_output_root(output_root: str) -> None:
    """Raises a `ValueError` naming `--output_root` unless it is a writable directory or can be created as one
    (its nearest existing ancestor is a writable directory). Creates nothing."""
    if not output_root:  # os.path.abspath("") is the current folder, os.makedirs("") fails after the loading
        raise ValueError("--output_root is empty: give the folder that receives the exported model.")
    path = os.path.abspath(output_root)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output_root {output_root!r} exists and is not a directory.")
    existing = nearest_existing_path(path)
    if not os.path.isdir(existing):
        raise ValueError(f"--output_root {output_root!r} cannot be created: {existing!r} is not a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--output_root {output_root!r} cannot be written: {existing!r} is not writable.")


def to_float16(pipeline: CartoonFacePipeline) -> CartoonFacePipeline:
    """Casts every model of `pipeline` to float16 in place, with `torch.nn.Module.to`: what `pipeline.to(torch.float16)`
    does, without diffusers 0.42's `ModelMixin.to` warning ("There are modules in SmallUNet that should be kept in
    float32: []"), which it logs on any dtype cast."""
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            torch.nn.Module.to(component, torch.float16)
    return pipeline


def temporary_paths(target: str) -> tuple[str, str]:
    """`(tmp, old)`: where the export of `target` writes the new model and moves the previous one aside, hidden
    names beside it (`.<name>.tmp`, `.<name>.old`): setup.cfg's package_data globs skip names starting with a dot, so
    a leftover of a killed export (SIGKILL, a closed terminal: no clean-up runs) is never packaged."""
    parent, name = os.path.split(target)
    return os.path.join(parent, f".{name}.tmp"), os.path.join(parent, f".{name}.old")


def recover_interrupted_export(target: str) -> None:
    """Cleans up after an export that was interrupted: a `.<name>.old` left while `<name>` is missing is the complete
    previous model (moved aside, the new one not yet in place) and is put back; any other `.<name>.tmp` /
    `.<name>.old` is a leftover and is deleted (so are the `<name>.tmp` / `<name>.old` of earlier versions of this
    script, which setup.cfg's package_data would ship)."""
    tmp, old = temporary_paths(target)
    leftovers = (tmp, old, target + ".tmp", target + ".old")
    for moved_aside in (old, target + ".old"):
        if os.path.isdir(moved_aside) and not os.path.lexists(target):
            os.replace(moved_aside, target)
    for leftover in leftovers:
        if os.path.lexists(leftover):
            shutil.rmtree(leftover, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> str:
    """Exports `--model_path` as the shipped model `--name` under `--output_root`; returns the written folder.

    The new folder is written as `.<name>.tmp`, the previous model (if any) is moved aside to `.<name>.old` by an
    atomic rename, the new one renamed into place, and only then is the old one deleted: at any moment `<name>` is
    either a complete model or missing (a first export, or a process killed between the two renames: the next
    export puts the previous model back). Unless the process is killed, no `.<name>.tmp` / `.<name>.old` is left.
    """
    args = parse_args(argv)
    check_paths(args)
    pipeline = CartoonFacePipeline.from_pretrained(args.model_path)
    if args.text_encoder_path:
        check_same_text_encoder(pipeline, args.text_encoder_path, text_encoder_was_fine_tuned(args.model_path))
    if args.vae_path:
        pipeline.register_modules(vae=same_latents_vae(pipeline.vae, args.vae_path[-1]))
    target = os.path.join(args.output_root, args.name)
    tmp, old = temporary_paths(target)
    os.makedirs(args.output_root, exist_ok=True)
    recover_interrupted_export(target)
    try:
        write_export(pipeline, args, tmp)
        if os.path.lexists(target):
            os.replace(target, old)  # atomic: `target` is the old model until the next line makes it the new one
        os.replace(tmp, target)
    finally:
        recover_interrupted_export(target)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(target) for f in files)
    print(f"wrote {target} ({size / 1e6:.2f} MB, float16 weights; sdscratch {sdscratch.__version__})")
    return target


def write_export(pipeline: CartoonFacePipeline, args: argparse.Namespace, tmp: str) -> None:
    """Writes the whole exported folder to `tmp`: float16 weights, the model card (retitled, with the VAE and text
    encoder training sections added) and the last validation grid."""
    to_float16(pipeline).save_pretrained(tmp, safe_serialization=True)
    compute_in_float32(os.path.join(tmp, "text_encoder", "config.json"))
    drop_name_or_path(tmp)
    # the model card and the images it shows (validation grids), relative paths kept
    for name in CARD_FILES:
        if os.path.isfile(os.path.join(args.model_path, name)):
            shutil.copyfile(os.path.join(args.model_path, name), os.path.join(tmp, name))
    if os.path.isfile(os.path.join(tmp, "README.md")):
        retitle_card(os.path.join(tmp, "README.md"), args.name)
        point_usage_at_export(os.path.join(tmp, "README.md"), args.name, args.output_root)
    validation = os.path.join(args.model_path, "validation")
    if os.path.isdir(validation):
        last = sorted(os.listdir(validation))[-1:]  # the final grid only: the card shows it
        os.makedirs(os.path.join(tmp, "validation"))
        for name in last:
            shutil.copyfile(os.path.join(validation, name), os.path.join(tmp, "validation", name))
    for stage, path in enumerate(args.vae_path or [], start=1):
        append_vae_training(os.path.join(tmp, "README.md"), os.path.join(path, "README.md"), stage)
    if args.text_encoder_path:
        append_training(
            os.path.join(tmp, "README.md"),
            os.path.join(args.text_encoder_path, "README.md"),
            "\n\n## Text encoder training\n\n",
            "### Text encoder ",
            "--text_encoder_path",
        )


def retitle_card(card_path: str, name: str) -> None:
    """Names the card after the shipped model: train_unet.py titles it after its output folder
    (``# pipeline: text-to-image from scratch`` in the recipe), which means nothing once shipped. Only a title
    of that form (``# <run>: <what>``) is renamed; any other card keeps its title."""
    with open(card_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if title is not None:
        lines[title] = re.sub(r"^# [^:]+: ", f"# {name}: ", lines[title])
    with open(card_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def point_usage_at_export(card_path: str, name: str, output_root: str) -> None:
    """Makes the card's usage snippet load the exported model: train_unet.py's loads the run's output folder (or the
    Hub repo it uploaded to), neither of which is what is shipped. Exported into this repository's
    sdscratch/pretrained, the model loads as `sdscratch.pretrained(name)`; exported elsewhere, from its folder."""
    with open(card_path, encoding="utf-8") as f:
        card = f.read()
    start = card.find("\n## Usage\n")
    if start < 0:
        return
    end = card.find("\n## ", start + 1)
    end = len(card) if end < 0 else end
    loading = re.compile(r'CartoonFacePipeline\.from_pretrained\("[^"\n]*"\)')
    usage = card[start:end]
    if not loading.search(usage):  # not train_unet.py's snippet: left as written
        return
    if os.path.realpath(output_root) == os.path.realpath(REPO_PRETRAINED_DIR):
        source = f'sdscratch.pretrained("{name}")'
        if "\nimport sdscratch\n" not in usage:
            usage = usage.replace("\nfrom sdscratch import ", "\nimport sdscratch\nfrom sdscratch import ", 1)
    else:
        source = json.dumps(os.path.join(output_root, name))
    usage = loading.sub(lambda _: f"CartoonFacePipeline.from_pretrained({source})", usage, count=1)
    with open(card_path, "w", encoding="utf-8") as f:
        f.write(card[:start] + usage + card[end:])


def same_latents_vae(pipeline_vae: Optional[SmallVAE], vae_path: str) -> SmallVAE:
    """The SmallVAE in `vae_path`/vae, checked to encode exactly as `pipeline_vae` does (same encoder weights, same
    config and scaling_factor): the pipeline's UNet was trained on those latents."""
    if pipeline_vae is None:
        raise ValueError("--vae_path: the pipeline in --model_path has no VAE (pixel space).")
    vae, _ = load_frozen_vae(vae_path, flag="--vae_path")

    def config(model):
        return {k: v for k, v in model.config.items() if not k.startswith("_")}

    if config(vae) != config(pipeline_vae):
        raise ValueError(
            f"--vae_path {vae_path!r}: its VAE config {config(vae)} differs from the pipeline's "
            f"{config(pipeline_vae)}; the UNet was trained on the pipeline VAE's latents."
        )
    ours, theirs = vae.state_dict(), pipeline_vae.state_dict()
    changed = [k for k in ours if k.startswith(ENCODER_SIDE) and not torch.equal(ours[k], theirs[k].to(ours[k]))]
    if changed:
        raise ValueError(
            f"--vae_path {vae_path!r}: its encoder differs from the pipeline's ({len(changed)} tensors, e.g. "
            f"{changed[0]}); the UNet was trained on the pipeline encoder's latents. Only a decoder fine-tuned with "
            "train_vae.py --train_decoder_only can be swapped in."
        )
    return vae


def check_same_text_encoder(pipeline: CartoonFacePipeline, text_encoder_path: str, fine_tuned: bool = False) -> None:
    """Raises unless the CLIP in `text_encoder_path` (train_clip.py's output) holds exactly the pipeline's text
    encoder weights and tokenizer vocabulary: the card must describe the encoder the UNet was trained on. With
    `fine_tuned` (the UNet run used `--train_text_encoder`), the weights moved by design: the tokenizer must still
    be the same and the encoder the same architecture (tensor names and shapes)."""
    try:
        tokenizer, text_encoder = load_text_components(text_encoder_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--text_encoder_path {text_encoder_path!r}: no CLIP tokenizer and text encoder could be loaded from it "
            f"(expected train_clip.py's output folder): {error}"
        ) from error
    if pipeline.text_encoder is None or tokenizer.get_vocab() != pipeline.tokenizer.get_vocab():
        raise ValueError(
            f"--text_encoder_path {text_encoder_path!r}: its tokenizer is not the pipeline's (the UNet in "
            "--model_path was not trained on this text encoder)."
        )
    ours, theirs = text_encoder.state_dict(), pipeline.text_encoder.state_dict()
    if fine_tuned:
        changed = [k for k in ours if k not in theirs or ours[k].shape != theirs[k].shape]
        changed += [k for k in theirs if k not in ours]
        how = "another architecture"
    else:
        changed = [k for k in ours if k not in theirs or not torch.equal(ours[k], theirs[k].to(ours[k]))]
        how = "other weights, and the UNet run did not fine-tune it (--train_text_encoder)"
    if changed:
        raise ValueError(
            f"--text_encoder_path {text_encoder_path!r}: its text encoder differs from the pipeline's: {how} "
            f"({len(changed)} tensors, e.g. {changed[0]}); pass the train_clip.py folder given to train_unet.py "
            "--pretrained_text_encoder."
        )


def text_encoder_was_fine_tuned(model_path: str) -> bool:
    """Whether the train_unet.py run in `model_path` fine-tuned its `--pretrained_text_encoder`
    (`--train_text_encoder`), read from the exact command in its model card."""
    command = card_command(os.path.join(model_path, "README.md"), "train_unet.py")
    return command is not None and "--train_text_encoder" in command


def append_training(card_path: str, source_card_path: str, title: str, prefix: str, flag: str) -> None:
    """Adds the "## Training" and "## Metrics" sections of another training run's card (a VAE, a CLIP) to the
    pipeline card as `title`, then `prefix` + "training" / "metrics" subsections, so that one card says how every
    trained part was made (and what the whole training cost)."""
    kept = training_sections(source_card_path, flag)  # main() checked it before any work
    body = "\n\n".join(prefix + s.strip()[0].lower() + s.strip()[1:] for s in kept)
    card = ""
    if os.path.isfile(card_path):
        with open(card_path, encoding="utf-8") as f:
            card = f.read()
    card = card.rstrip() + title + body.replace("\n## ", "\n### ") + "\n"
    with open(card_path, "w", encoding="utf-8") as f:
        f.write(card)


def append_vae_training(card_path: str, vae_card_path: str, stage: int = 1) -> None:
    """`append_training` for the VAE runs, under "## VAE training": stage 1 is titled "### VAE training", later
    stages (a decoder fine-tune) "### VAE stage 2 training" and so on."""
    if stage == 1 and os.path.isfile(card_path):  # train_unet.py's copy of the VAE's metrics: the stages give them
        with open(card_path, encoding="utf-8") as f:
            card = re.sub(r"^\| vae [^\n]*\n", "", f.read(), flags=re.MULTILINE)
        with open(card_path, "w", encoding="utf-8") as f:
            f.write(card)
    title = "\n\n## VAE training\n\n" if stage == 1 else "\n\n"
    prefix = "### VAE " if stage == 1 else f"### VAE stage {stage} "
    append_training(card_path, vae_card_path, title, prefix, "--vae_path")


if __name__ == "__main__":
    main()
