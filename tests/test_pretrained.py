"""Shipped models: sdscratch.pretrained() and training/export_pretrained.py (fp16 storage, fp32 compute)."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import sdscratch
from sdscratch import CartoonFacePipeline, SmallVAE
from sdscratch.demo import tiny_random_pipeline

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrained_rejects_unknown_names():
    from sdscratch.pretrained import is_available

    with pytest.raises(ValueError, match="`name` must be one of"):
        sdscratch.pretrained("flowers")
    assert not any(is_available(name) for name in ("flowers", ["digits"], None))  # unhashable too: False


@pytest.mark.parametrize("name", sorted(sdscratch.PRETRAINED_MODELS))
def test_shipped_models_load_offline_in_float32(name):
    from sdscratch.pretrained import is_available

    if not is_available(name):
        with pytest.raises(FileNotFoundError, match="not present"):
            sdscratch.pretrained(name)
        pytest.skip(f"{name} is not shipped in this checkout")
    pipe = CartoonFacePipeline.from_pretrained(sdscratch.pretrained(name))
    assert pipe.unet.dtype == torch.float32
    # each part alone, with its library's defaults, as a diffusers user assembling a pipeline loads it: float32
    # (transformers 5 loads the dtype a config names; the files are float16)
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel.from_pretrained(Path(sdscratch.pretrained(name)) / "text_encoder")
    assert text_encoder.dtype == torch.float32
    torch.testing.assert_close(text_encoder.state_dict(), pipe.text_encoder.state_dict(), rtol=0, atol=0)
    card = (Path(sdscratch.pretrained(name)) / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers") and "## Evaluation" in card


@pytest.mark.parametrize("name", sorted(sdscratch.PRETRAINED_MODELS))
def test_shipped_cards_usage_snippet_runs(name):
    """The `## Usage` code of each shipped card, as a user pastes it (2 steps instead of 25)."""
    import re

    card = (Path(sdscratch.pretrained(name)) / "README.md").read_text()
    code = re.search(r"## Usage\n\n```python\n(.*?)```", card, re.S).group(1)
    assert f'sdscratch.pretrained("{name}")' in code
    namespace = {}
    exec(code.replace("num_inference_steps=25", "num_inference_steps=2"), namespace)
    size = namespace["pipe"].unet.config.sample_size * namespace["pipe"].vae_scale_factor
    assert namespace["image"].size == (size, size)


@pytest.mark.parametrize("name", sorted(sdscratch.PRETRAINED_MODELS))
def test_a_plain_call_uses_the_guidance_scale_the_card_was_evaluated_at(name):
    """`pipe(prompt)` (and `interpolate`) with no `guidance_scale` draws at the scale of the card's numbers, not at
    Stable Diffusion's 7.5 (which costs the shipped cartoon-faces model 12 points of Frechet distance)."""
    import inspect
    import re

    from sdscratch import CartoonFacePipeline

    card = (Path(sdscratch.pretrained(name)) / "README.md").read_text()
    scales = {float(s) for s in re.findall(r"--guidance_scale (\S+)", card)}
    scales |= {float(s) for s in re.findall(r"guidance scale ([\d.]+);", card)}
    assert len(scales) == 1, scales  # every evaluation on the card at one scale
    defaults = [inspect.signature(method).parameters["guidance_scale"].default
                for method in (CartoonFacePipeline.__call__, CartoonFacePipeline.interpolate)]  # fmt: skip
    assert defaults == [scales.pop()] * 2


def test_export_writes_fp16_weights_that_load_as_float32(tmp_path):
    pipe = tiny_random_pipeline(seed=0, name="digits")
    source = tmp_path / "trained"
    pipe.save_pretrained(tmp_path / "first")
    pipe = CartoonFacePipeline.from_pretrained(tmp_path / "first")  # loaded: its configs name where it came from
    pipe.save_pretrained(source)
    (source / "README.md").write_text("---\nlibrary_name: diffusers\n---\n# card\n")
    (source / "validation").mkdir()
    for step in (100, 200):
        (source / "validation" / f"samples-{step:06d}.png").write_bytes(b"png")

    export = load_script("export_pretrained")
    target = Path(
        export.main(["--model_path", str(source), "--name", "digits", "--output_root", str(tmp_path / "pkg")])
    )
    assert target == tmp_path / "pkg" / "digits" and not (tmp_path / "pkg" / "digits.tmp").exists()
    assert json.loads((target / "model_index.json").read_text())["unet"] == ["sdscratch.models.unet", "SmallUNet"]
    for config in target.rglob("*.json"):  # the training machine's paths (`_name_or_path`) are not shipped
        assert "_name_or_path" not in json.loads(config.read_text()) and str(tmp_path) not in config.read_text()
    with safe_open(target / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} <= {torch.float16}
    assert sorted(p.name for p in (target / "validation").iterdir()) == ["samples-000200.png"]
    assert (target / "README.md").read_text().endswith("# card\n")

    loaded = CartoonFacePipeline.from_pretrained(target)
    assert loaded.unet.dtype == torch.float32 and loaded.text_encoder.dtype == torch.float32
    with safe_open(target / "text_encoder" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} <= {torch.float16}
    from transformers import CLIPTextModel

    assert CLIPTextModel.from_pretrained(target / "text_encoder").dtype == torch.float32  # storage fp16, compute fp32
    loaded.set_progress_bar_config(disable=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": 2, "output_type": "np", "generator": torch.Generator().manual_seed(0)}
    a = loaded("3", **kwargs).images
    kwargs["generator"] = torch.Generator().manual_seed(0)
    b = pipe("3", **kwargs).images
    np.testing.assert_allclose(a, b, atol=0.02)  # fp16 storage rounding only


def test_export_names_the_card_after_the_shipped_model(tmp_path):
    source = tmp_path / "pipeline"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(source)
    body = "\nA card.\n\n```bash\n# note: a comment\n```\n"
    (source / "README.md").write_text(
        "---\nlibrary_name: diffusers\n---\n\n# pipeline: text-to-image from scratch\n" + body
    )
    export = load_script("export_pretrained")
    target = export.main(["--model_path", str(source), "--name", "digits", "--output_root", str(tmp_path / "pkg")])
    card = (Path(target) / "README.md").read_text()
    assert card == "---\nlibrary_name: diffusers\n---\n\n# digits: text-to-image from scratch\n" + body
    # a card titled otherwise keeps its title, and a "# x: y" comment further down stays as it is
    (source / "README.md").write_text("# My model\n" + body)
    target = export.main(["--model_path", str(source), "--name", "digits", "--output_root", str(tmp_path / "pkg")])
    assert (Path(target) / "README.md").read_text() == "# My model\n" + body


def test_export_card_usage_loads_the_exported_model(tmp_path, monkeypatch):
    """train_unet.py's card loads the run's output folder (or its Hub repo): the exported card loads the export,
    as `sdscratch.pretrained(name)` when it is written into the repository's shipped models."""
    source = tmp_path / "outputs" / "digits"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(source)
    usage = (
        "## Usage\n\n```python\nimport torch\nfrom sdscratch import CartoonFacePipeline\n\n"
        'pipe = CartoonFacePipeline.from_pretrained("{}")\nimage = pipe("3").images[0]\n```\n'
    )
    card = "---\nlibrary_name: diffusers\n---\n\n# digits: text-to-image from scratch\n\nA card.\n\n"
    (source / "README.md").write_text(card + usage.format(source) + "\n## Training\n\n- Steps: 9\n")
    export = load_script("export_pretrained")
    root = tmp_path / "my_models"
    target = export.main(export_args(source, root))
    assert (Path(target) / "README.md").read_text() == (
        card + usage.format(root / "digits") + "\n## Training\n\n- Steps: 9\n"
    )
    monkeypatch.setattr(export, "REPO_PRETRAINED_DIR", str(root))  # the repository's sdscratch/pretrained
    target = export.main(export_args(source, root))
    text = (Path(target) / "README.md").read_text()
    assert "import torch\nimport sdscratch\nfrom sdscratch import CartoonFacePipeline\n" in text
    assert 'pipe = CartoonFacePipeline.from_pretrained(sdscratch.pretrained("digits"))\n' in text
    assert str(source) not in text and text.endswith("\n## Training\n\n- Steps: 9\n")


def test_export_keeps_a_non_ascii_card_utf8_on_windows(tmp_path, windows_text_encoding):
    """Python on Windows reads and writes text as cp1252 unless told otherwise: the UTF-8 card of a run with a
    Japanese validation prompt failed to read, and a French one was exported double-encoded."""
    source = tmp_path / "pipeline"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(source)
    card = "# pipeline: text-to-image from scratch\n\nPrompts, left to right: `こんにちは`; `café`\n"
    (source / "README.md").write_bytes(card.encode("utf-8"))
    export = load_script("export_pretrained")
    target = export.main(export_args(source, tmp_path / "pkg"))
    assert (Path(target) / "README.md").read_bytes().decode("utf-8") == card.replace("# pipeline:", "# digits:")


def test_export_adds_the_vae_training_section(tmp_path):
    source, vae_run, decoder_run = tmp_path / "trained", tmp_path / "vae-run", tmp_path / "decoder-run"
    tiny_random_pipeline(seed=0).save_pretrained(source)
    (source / "README.md").write_text(
        "---\nlibrary_name: diffusers\n---\n# card\n\n## Training\n\n- Steps: 9\n\n## Metrics\n\n| loss | 0.1 |\n"
        "| vae psnr | 29.27 |\n"
    )
    vae = SmallVAE.from_pretrained(source / "vae")
    vae.save_pretrained(vae_run / "vae")
    (vae_run / "reconstruction_metrics.json").write_text('{"psnr": 29.27}')
    (vae_run / "README.md").write_text(
        "# SmallVAE\n\n## Usage\n\ncode\n\n## Training\n\n- Steps: 1700\n\n## Metrics\n\n| psnr | 29.27 |\n\n"
        "## Samples\n\n![grid](./validation/x.png)\n"
    )
    with torch.no_grad():  # a decoder fine-tune: the latents (encoder, scaling_factor) unchanged
        vae.decoder.conv_out.bias.add_(0.5)
    vae.save_pretrained(decoder_run / "vae")
    (decoder_run / "reconstruction_metrics.json").write_text('{"psnr": 31}')
    (decoder_run / "README.md").write_text(
        "# SmallVAE\n\n## Training\n\n- Steps: 800\n\n## Metrics\n\n| psnr | 31 |\n"
    )
    export = load_script("export_pretrained")
    root = str(tmp_path / "pkg")
    with pytest.raises(ValueError, match="--vae_path"):
        export.main(["--model_path", str(source), "--name", "cartoon-faces", "--output_root", root,
                     "--vae_path", str(tmp_path)])  # fmt: skip
    assert not (tmp_path / "pkg").exists()  # refused before any work
    target = export.main(["--model_path", str(source), "--name", "cartoon-faces", "--output_root", root,
                          "--vae_path", str(vae_run)])  # fmt: skip
    card = (Path(target) / "README.md").read_text()
    assert card.index("- Steps: 9") < card.index("## VAE training") < card.index("### VAE training")
    assert "- Steps: 1700" in card and "### VAE metrics" in card and "| psnr | 29.27 |" in card
    assert "Usage" not in card.split("## VAE training")[1] and "x.png" not in card
    assert "| loss | 0.1 |" in card and "| vae psnr" not in card  # the stage sections carry the VAE's metrics

    # two stages: both cards, and the fine-tuned decoder is the one shipped
    target = export.main(["--model_path", str(source), "--name", "cartoon-faces", "--output_root", root,
                          "--vae_path", str(vae_run), str(decoder_run)])  # fmt: skip
    card = (Path(target) / "README.md").read_text()
    assert card.count("\n## VAE training\n") == 1
    assert card.index("- Steps: 1700") < card.index("### VAE stage 2 training") < card.index("- Steps: 800")
    assert "### VAE stage 2 metrics" in card
    shipped = SmallVAE.from_pretrained(Path(target) / "vae")
    torch.testing.assert_close(shipped.decoder.conv_out.bias, vae.decoder.conv_out.bias, atol=1e-3, rtol=0)

    # a different encoder would not produce the latents the UNet learned: refused, nothing written
    with torch.no_grad():
        vae.encoder.conv_in.bias.add_(0.5)
    vae.save_pretrained(decoder_run / "vae")
    with pytest.raises(ValueError, match="encoder differs from the pipeline's.*--train_decoder_only"):
        export.main(["--model_path", str(source), "--name", "digits", "--output_root", root,
                     "--vae_path", str(vae_run), str(decoder_run)])  # fmt: skip
    assert not (tmp_path / "pkg" / "digits").exists()


def test_export_checks_the_vae_stages_order_and_cards_before_any_work(tmp_path):
    # a reversed --vae_path order shipped the earlier decoder under swapped stage titles; a stage card without a
    # "## Training" section failed only after the temporary export was written
    source = tmp_path / "trained"
    tiny_random_pipeline(seed=0).save_pretrained(source)
    vae = SmallVAE.from_pretrained(source / "vae")
    command = "accelerate launch training/train_vae.py --dataset_name builtin:cartoon-faces --output_dir {}{}"
    runs = [tmp_path / "vae-run", tmp_path / "decoder", tmp_path / "decoder-mse"]
    parents = ["", f" --train_decoder_only --pretrained_vae_model_name_or_path {runs[0]}",
               f" --train_decoder_only --pretrained_vae_model_name_or_path={runs[1]}"]  # fmt: skip
    for run, parent in zip(runs, parents):
        vae.save_pretrained(run / "vae")
        (run / "reconstruction_metrics.json").write_text("{}")
        card = f"# SmallVAE\n\n## Training\n\nCommand:\n\n```bash\n{command.format(run, parent)}\n```\n"
        (run / "README.md").write_text(card)
    export = load_script("export_pretrained")
    root = tmp_path / "pkg"
    for order, error in [
        ([runs[0], runs[2], runs[1]], r"stage 2 \(.*decoder-mse'\) was fine-tuned from .*decoder', given as stage 3"),
        ([runs[1], runs[0]], r"stage 1 \(.*decoder'\) was fine-tuned from .*vae-run', given as stage 2"),
        ([runs[1], runs[0], runs[2]], r"stage 1 .*given as stage 2"),
        ([runs[0], runs[0]], r"stage 2 \(.*vae-run'\) trained a VAE from scratch .*only the first stage can"),
    ]:
        with pytest.raises(ValueError, match=f"--vae_path: {error}: list the runs in training order"):
            export.main(export_args(source, root, "--vae_path", *map(str, order)))
    (runs[2] / "README.md").write_text("# SmallVAE\n\n## Usage\n\ncode\n")
    with pytest.raises(ValueError, match="--vae_path: .*decoder-mse.README.md has no '## Training' section"):
        export.main(export_args(source, root, "--vae_path", *map(str, runs)))
    assert not root.exists()  # refused before any work
    # the training order exports, each stage under its own title
    target = export.main(export_args(source, root, "--vae_path", *map(str, runs[:2])))
    card = (Path(target) / "README.md").read_text()
    assert card.index("### VAE training") < card.index(str(runs[0])) < card.index("### VAE stage 2 training")


def test_export_rejects_a_folder_that_is_not_a_pipeline(tmp_path):
    export = load_script("export_pretrained")
    with pytest.raises(ValueError, match="--model_path"):
        export.main(["--model_path", str(tmp_path), "--name", "digits", "--output_root", str(tmp_path / "pkg")])


def export_args(source, root, *extra):
    return ["--model_path", str(source), "--name", "digits", "--output_root", str(root), *map(str, extra)]


def complete_model_card(folder: Path):
    """The card of the complete exported model in `folder` (every file of an export there and loadable), else None."""
    if not (folder / "model_index.json").is_file() or not (folder / "README.md").is_file():
        return None
    CartoonFacePipeline.from_pretrained(folder)
    return (folder / "README.md").read_text()


@pytest.mark.parametrize("interrupted", ["deleting the old model", "renaming the new one into place"])
def test_interrupted_export_leaves_a_complete_model_and_no_leftover(tmp_path, monkeypatch, interrupted):
    import shutil

    source, root = tmp_path / "trained", tmp_path / "pkg"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(source)
    export = load_script("export_pretrained")
    (source / "README.md").write_text("# old model\n")
    target = Path(export.main(export_args(source, root)))
    (source / "README.md").write_text("# new model\n")

    real_rmtree, real_replace = shutil.rmtree, os.replace

    def interrupted_rmtree(path, *args, **kwargs):  # the previous model half deleted, then Ctrl-C
        if (Path(path) / "README.md").is_file() and "old model" in (Path(path) / "README.md").read_text():
            (Path(path) / "model_index.json").unlink()
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)

    def failing_replace(src, dst):  # e.g. a full disk or a killed process at the rename of the new folder
        if str(src).endswith(".tmp"):
            raise OSError("interrupted")
        real_replace(src, dst)

    if interrupted == "deleting the old model":
        monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
        with pytest.raises(KeyboardInterrupt):
            export.main(export_args(source, root))
        assert complete_model_card(target) == "# new model\n"  # in place before the old one is deleted
        monkeypatch.setattr(shutil, "rmtree", real_rmtree)
        # the interrupted clean-up's half-deleted `.digits.old` is never loaded, and the next export removes it
        assert not (root / ".digits.old" / "model_index.json").exists()
        export.main(export_args(source, root))
        assert complete_model_card(target) == "# new model\n"
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(OSError, match="interrupted"):
            export.main(export_args(source, root))
        assert complete_model_card(target) == "# old model\n"  # the old model put back
    assert sorted(p.name for p in root.iterdir()) == ["digits"]  # no digits.tmp / digits.old to package


def test_a_killed_exports_leftover_is_not_packaged(tmp_path, monkeypatch):
    """A killed export (SIGKILL, a closed terminal) runs no clean-up: its temporary folder, beside the shipped models,
    has a hidden name that setup.cfg's package_data globs skip (`digits.tmp/` went into the wheel)."""
    import configparser
    import glob

    source, package = tmp_path / "trained", tmp_path / "sdscratch"
    root = package / "pretrained"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(source)
    (source / "README.md").write_text("# old model\n")
    export = load_script("export_pretrained")
    target = Path(export.main(export_args(source, root)))
    (source / "README.md").write_text("# new model\n")

    def killed(*args):  # the weights written, then the process dies: no `finally` runs
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(export, "compute_in_float32", killed)
        patch.setattr(export, "recover_interrupted_export", lambda target: None)
        with pytest.raises(KeyboardInterrupt):
            export.main(export_args(source, root))
    leftovers = [p for p in root.iterdir() if p.name != "digits"]
    assert leftovers and all(p.name.startswith(".") for p in leftovers)
    assert any(p.suffix == ".safetensors" for p in leftovers[0].rglob("*"))
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["sdscratch"].split(",")]
    packaged = {Path(path) for pattern in patterns for path in glob.glob(str(package / pattern), recursive=True)}
    assert target / "model_index.json" in packaged and complete_model_card(target) == "# old model\n"
    assert not [path for path in packaged if any(leftover in path.parents for leftover in leftovers)]
    export.main(export_args(source, root))  # the next export removes the leftover
    assert sorted(p.name for p in root.iterdir()) == ["digits"] and complete_model_card(target) == "# new model\n"


def test_export_recovers_a_model_moved_aside_by_an_interrupted_export(tmp_path):
    source, root = tmp_path / "trained", tmp_path / "pkg"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(source)
    (source / "README.md").write_text("# old model\n")
    export = load_script("export_pretrained")
    target = Path(export.main(export_args(source, root)))
    os.replace(target, root / "digits.old")  # killed between the two renames
    (root / "digits.tmp").mkdir()  # and a half-written new folder
    export.recover_interrupted_export(str(target))
    assert complete_model_card(target) == "# old model\n"
    assert sorted(p.name for p in root.iterdir()) == ["digits"]


def test_export_rejects_a_unet_run_as_vae_path(tmp_path):
    source = tmp_path / "trained"
    tiny_random_pipeline(seed=0).save_pretrained(source)
    (source / "README.md").write_text("# card\n\n## Training\n\n- Steps: 9\n")
    (source / "reconstruction_metrics.json").write_text("{}")  # even with a metrics file: it is a pipeline folder
    export = load_script("export_pretrained")
    root = tmp_path / "pkg"
    with pytest.raises(ValueError, match="--vae_path .*pipeline folder"):
        export.main(export_args(source, root, "--vae_path", source))
    vae_run = tmp_path / "vae-run"
    SmallVAE.from_pretrained(source / "vae").save_pretrained(vae_run / "vae")
    (vae_run / "README.md").write_text("# SmallVAE\n\n## Training\n\n- Steps: 1700\n")
    with pytest.raises(ValueError, match="--vae_path .*no reconstruction_metrics.json"):
        export.main(export_args(source, root, "--vae_path", vae_run))
    (vae_run / "reconstruction_metrics.json").write_text("{}")
    (vae_run / "vae" / "config.json").write_text('{"_class_name": "SmallUNet"}')
    with pytest.raises(ValueError, match="--vae_path .*no SmallVAE"):
        export.main(export_args(source, root, "--vae_path", vae_run))
    with pytest.raises(ValueError, match="--vae_path .*does not exist"):
        export.main(export_args(source, root, "--vae_path", tmp_path / "missing"))
    assert not root.exists()  # refused before any work


def test_export_checks_model_path_and_output_root_before_loading(tmp_path, monkeypatch):
    source = tmp_path / "trained"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(source)
    export = load_script("export_pretrained")
    monkeypatch.setattr(
        CartoonFacePipeline, "from_pretrained", lambda *args, **kwargs: pytest.fail("loaded before the checks")
    )
    with pytest.raises(ValueError, match="--model_path .*does not exist"):
        export.main(export_args(tmp_path / "missing", tmp_path / "pkg"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="--output_root .*not a directory"):
        export.main(export_args(source, tmp_path / "file"))
    with pytest.raises(ValueError, match="--output_root .*cannot be created"):
        export.main(export_args(source, tmp_path / "file" / "pkg"))
    with pytest.raises(ValueError, match="--output_root is empty"):  # makedirs("") failed after the loading
        export.main(export_args(source, ""))
    (source / "README.md").write_text("# card\n\n## Training\n\n- Steps: 9\n")
    with pytest.raises(ValueError, match="--text_encoder_path .*is a pipeline folder"):
        export.main(export_args(source, tmp_path / "pkg", "--text_encoder_path", source))
    with pytest.raises(ValueError, match="--text_encoder_path .*does not exist"):
        export.main(export_args(source, tmp_path / "pkg", "--text_encoder_path", tmp_path / "missing"))
    assert not (tmp_path / "pkg").exists()


def test_export_names_the_text_encoder_flag_when_it_holds_no_clip(tmp_path):
    source, not_clip = tmp_path / "trained", tmp_path / "not-clip"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(source)
    not_clip.mkdir()
    (not_clip / "README.md").write_text("# SmallVAE\n\n## Training\n\n- Steps: 9\n")
    export = load_script("export_pretrained")
    with pytest.raises(ValueError, match="--text_encoder_path .*no CLIP tokenizer and text encoder could be loaded"):
        export.main(export_args(source, tmp_path / "pkg", "--text_encoder_path", not_clip))
    assert not (tmp_path / "pkg").exists()


def test_export_writes_into_the_repository_when_sdscratch_is_installed_elsewhere(tmp_path, monkeypatch):
    """Installed from a wheel, `sdscratch.pretrained.PRETRAINED_DIR` is in site-packages: the default export still
    goes to this repository's sdscratch/pretrained (what setup.cfg packages and the recipes evaluate)."""
    module = importlib.import_module("sdscratch.pretrained")  # `sdscratch.pretrained` is the function
    monkeypatch.setattr(module, "PRETRAINED_DIR", tmp_path / "site-packages" / "sdscratch" / "pretrained")
    export = load_script("export_pretrained")
    args = export.parse_args(["--model_path", "m", "--name", "digits"])
    assert Path(args.output_root) == ROOT / "sdscratch" / "pretrained"


def test_export_casts_to_float16_without_the_diffusers_warning(tmp_path, monkeypatch, capfd):
    import copy

    from diffusers import ModelMixin

    pipe = tiny_random_pipeline(seed=0)  # with a VAE: SmallVAE warned too
    source = tmp_path / "trained"
    pipe.save_pretrained(source)
    reference = tmp_path / "reference"
    copy.deepcopy(pipe).to(torch.float16).save_pretrained(reference, safe_serialization=True)  # the old way
    export = load_script("export_pretrained")
    capfd.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(ModelMixin, "to", lambda *args, **kwargs: pytest.fail("ModelMixin.to called"))
        target = Path(export.main(export_args(source, tmp_path / "pkg")))
    assert "should be kept in float32" not in "".join(capfd.readouterr())  # diffusers logs to the real stderr
    parts = sorted(p.relative_to(reference) for p in reference.glob("*/diffusion_pytorch_model.safetensors"))
    assert Path("unet/diffusion_pytorch_model.safetensors") in parts
    for part in parts:
        assert (target / part).read_bytes() == (reference / part).read_bytes()  # the same bytes as before
    with (
        safe_open(target / "text_encoder" / "model.safetensors", "pt") as f,
        safe_open(reference / "text_encoder" / "model.safetensors", "pt") as g,
    ):
        for key in f.keys():
            torch.testing.assert_close(f.get_tensor(key), g.get_tensor(key), rtol=0, atol=0)


@pytest.mark.parametrize("change", ["quant_conv", "scaling_factor"])
def test_export_refuses_a_vae_that_makes_other_latents(tmp_path, change):
    # the UNet learned the latents of the pipeline's encoder, quant_conv and scaling_factor: a --vae_path whose
    # quant_conv or scaling_factor differs (its decoder would be fine) must be refused like another encoder
    source, vae_run = tmp_path / "trained", tmp_path / "vae-run"
    tiny_random_pipeline(seed=0).save_pretrained(source)
    vae = SmallVAE.from_pretrained(source / "vae")
    if change == "quant_conv":
        with torch.no_grad():
            vae.quant_conv.bias.add_(0.5)
    else:
        vae.register_to_config(scaling_factor=2 * vae.config.scaling_factor)
    vae.save_pretrained(vae_run / "vae")
    (vae_run / "reconstruction_metrics.json").write_text('{"psnr": 29.27}')
    (vae_run / "README.md").write_text("# SmallVAE\n\n## Training\n\n- Steps: 1700\n")
    export = load_script("export_pretrained")
    with pytest.raises(
        ValueError, match=f"--vae_path .*{'quant_conv' if change == 'quant_conv' else 'scaling_factor'}"
    ):
        export.main(export_args(source, tmp_path / "pkg", "--vae_path", vae_run))
    assert not (tmp_path / "pkg" / "digits").exists()
