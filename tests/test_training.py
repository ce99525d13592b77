"""training/train_vae.py and training/train_unet.py end to end on tiny configs and a few dozen built-in images.

The scripts run in-process (`main(parse_args([...]))`, no import overhead) except the two-process run, which needs
`accelerate launch`. Every run is a few steps of a tiny model: the whole file takes well under three minutes on 2 CPU
cores.
"""

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import datasets
import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import load as accelerate_load  # weights_only=True, with the numpy types allowed
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTokenizer

import sdscratch
from sdscratch import CartoonFacePipeline, SmallVAE, build_text_encoder, build_tokenizer
from sdscratch import training_utils as tu
from sdscratch.data.cartoon_faces import write_imagefolder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
import train_classifier  # noqa: E402
import train_clip  # noqa: E402
import train_unet  # noqa: E402
import train_vae  # noqa: E402

TINY_UNET = str(ROOT / "training" / "configs" / "tiny.json")
FACES = "builtin:cartoon-faces?num_images=40"
COMMON = ["--report_to", "none", "--train_batch_size", "8", "--validation_steps", "100", "--seed", "0"]
TINY_VAE = [
    "--block_out_channels",
    "8",
    "16",
    "16",
    "--latent_channels",
    "4",
    "--layers_per_block",
    "1",
]  # 64x64 -> 16x16x4


def run(script, argv):
    """Runs a training script in this process (accelerate's singletons reset between runs)."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return script.main(script.parse_args([str(a) for a in argv]))


def weights(folder, name="diffusion_pytorch_model.safetensors"):
    return load_file(os.path.join(folder, name))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 4, *TINY_VAE]
    argv += ["--use_ema", "--ema_decay", 0.99, "--random_flip", "--center_crop", "--checkpointing_steps", 2]
    argv += ["--checkpoints_total_limit", 1, "--validation_steps", 2, "--gradient_accumulation_steps", 2]
    argv += ["--reconstruction_loss", "l1", "--kl_weight", 1e-4, "--num_validation_images", 8, "--scale_lr"]
    argv += [
        "--gradient_checkpointing",
        "--max_train_samples",
        36,
        "--report_to",
        "tensorboard",
        "--logging_dir",
        "tb",
        "--hub_token",
        "hf_vae_secret",  # no --push_to_hub: only checks that the token is written nowhere
    ]
    run(train_vae, argv)
    return out


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory, vae_dir):
    out = tmp_path_factory.mktemp("pipeline") / "tiny-faces"
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 3, "--use_ema"]
    argv += ["--pretrained_vae_model_name_or_path", vae_dir, "--unet_config", TINY_UNET, "--checkpointing_steps", 2]
    argv += ["--validation_steps", 2, "--validation_prompts", "Cartoon face with glasses", "Cartoon face"]
    argv += ["--push_to_hub", "--hub_model_id", "someone/tiny-faces", "--hub_token", "hf_fake"]
    argv += ["--lr_warmup_steps", 1, "--lr_scheduler", "linear", "--adam_weight_decay", 0.0, "--max_grad_norm", 0.5]
    argv += ["--learning_rate", 1e-3, "--adam_beta1", 0.8, "--adam_beta2", 0.99, "--adam_epsilon", 1e-7]
    argv += ["--text_encoder_lr", 4e-3]
    with (
        mock.patch.object(tu.cards, "create_repo") as create_repo,
        mock.patch.object(tu.cards, "upload_folder") as upload,
    ):
        create_repo.return_value.repo_id = "someone/tiny-faces"
        run(train_unet, argv)
    create_repo.assert_called_once_with(repo_id="someone/tiny-faces", exist_ok=True, token="hf_fake")
    upload.assert_called_once()
    assert upload.call_args.kwargs["folder_path"] == str(out)
    assert upload.call_args.kwargs["repo_id"] == "someone/tiny-faces"
    assert "checkpoint-*" in upload.call_args.kwargs["ignore_patterns"]
    return out


def test_train_vae_writes_a_scaled_vae_metrics_grids_and_pruned_checkpoints(vae_dir):
    vae = SmallVAE.from_pretrained(vae_dir / "vae")
    assert vae.config.block_out_channels == [8, 16, 16] and vae.config.scaling_factor != 1.0
    metrics = json.loads((vae_dir / "reconstruction_metrics.json").read_text())
    assert metrics["num_images"] == 8 and {"mse", "psnr", "ssim"} <= metrics.keys()
    assert metrics["scaling_factor"] == pytest.approx(vae.config.scaling_factor)
    assert sorted(p.name for p in vae_dir.glob("checkpoint-*")) == ["checkpoint-4"]  # limit 1
    assert not list(vae_dir.glob(".tmp-checkpoint-*"))
    assert (vae_dir / "checkpoint-4" / "vae_ema" / "ema_state.json").is_file()
    assert (vae_dir / "validation" / "reconstructions-000002.png").is_file()
    assert list((vae_dir / "tb").rglob("events.out.tfevents*"))
    card = (vae_dir / "README.md").read_text()
    assert "library_name: diffusers" in card and "scaling_factor" in card
    assert f'SmallVAE.from_pretrained("{vae_dir}", subfolder="vae")' in card  # not uploaded: the output folder


@pytest.mark.parametrize("subfolder", ["", "vae"])
def test_a_vae_checkpoint_is_no_frozen_vae(vae_dir, tmp_path, subfolder):
    """A checkpoint's vae/ holds the raw weights and scaling_factor 1.0 (measured only when train_vae.py finishes):
    the UNet trained on it silently, on latents some 4x too large, and shipped the 1.0."""
    checkpoint = vae_dir / "checkpoint-4"
    assert SmallVAE.from_pretrained(checkpoint / "vae").config.scaling_factor == 1.0
    message = f"is a training checkpoint .* Give the run's output folder \\({vae_dir}\\)"
    with pytest.raises(ValueError, match=message):
        tu.load_frozen_vae(str(checkpoint / subfolder))
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / "unet", "--max_train_steps", 1]
    with pytest.raises(ValueError, match="--pretrained_vae_model_name_or_path .* is a training checkpoint"):
        run(train_unet, [*argv, "--pretrained_vae_model_name_or_path", checkpoint, "--unet_config", TINY_UNET])
    assert tu.load_frozen_vae(str(vae_dir))[1] == str(vae_dir / "vae")  # the finished run's folder


def test_train_unet_writes_a_pipeline_that_loads_and_generates(unet_dir):
    pipe = CartoonFacePipeline.from_pretrained(unet_dir)
    assert isinstance(pipe.vae, SmallVAE) and isinstance(pipe.unet, sdscratch.SmallUNet)
    config = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert config.clip_sample is False and config.prediction_type == "epsilon" and config.timestep_spacing
    images = pipe(["Cartoon face with glasses"], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert images.images[0].size == (64, 64)
    # EMA weights are what the folder holds
    ema = weights(unet_dir / "checkpoint-2" / "unet_ema")
    assert ema.keys() == weights(unet_dir / "unet").keys()
    assert (unet_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (unet_dir / "validation" / "samples-000002.png").is_file()


def test_model_card(unet_dir, tmp_path):
    card = (unet_dir / "README.md").read_text()
    header = card.split("---")[1]
    assert "library_name: diffusers" in header and "license: apache-2.0" in header
    assert "text-to-image" in header and "latent-diffusion" in header
    assert "accelerate launch training/train_unet.py --report_to none" in card  # the exact command
    assert "Steps: 3" in card and "Wall time" in card and "CPU" in card
    assert "learning rate 0.001 (text encoder 0.004)" in card
    assert "| vae psnr |" in card and "final_train_loss" in card
    assert "| text encoder separation mouth |" in card  # built-in faces: logged at every validation
    assert "![validation grid](./validation/samples-000003.png)" in card
    assert 'CartoonFacePipeline.from_pretrained("someone/tiny-faces")' in card  # the repo it was uploaded to
    card = tu.write_model_card(str(tmp_path), "t", "body", "Skiittoo/cartoon-faces", ["x"], "text-to-image")
    assert card.data.datasets == ["Skiittoo/cartoon-faces"] and card.data.library_name == "diffusers"


def unet_resume_argv(vae_dir, out, dataset="builtin:cartoon-faces?num_images=24"):
    argv = [*COMMON, "--dataset_name", dataset, "--output_dir", out]
    argv += ["--pretrained_vae_model_name_or_path", vae_dir / "vae", "--unet_config", TINY_UNET]
    argv += ["--max_train_steps", 5, "--checkpointing_steps", 2, "--use_ema", "--random_flip", "--snr_gamma", 5]
    argv += ["--noise_offset", 0.05, "--prediction_type", "v_prediction", "--lr_scheduler", "cosine"]
    argv += ["--conditioning_dropout_prob", 0.3, "--layers_per_block", 1, "--beta_schedule", "linear"]
    return argv + ["--validation_prompts", "Cartoon face"]


@pytest.mark.parametrize("captions_per_image", [1, 3])
def test_resume_matches_an_uninterrupted_run(vae_dir, tmp_path, captions_per_image, caplog):
    caplog.set_level(logging.INFO)
    # 24 images, batch 8: 3 steps per epoch, so resuming at step 2 resumes mid-epoch and crosses into epoch 2
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    dataset = f"builtin:cartoon-faces?num_images=24&caption_style=rich&captions_per_image={captions_per_image}"
    run(train_unet, unet_resume_argv(vae_dir, full, dataset))
    # "interrupted at step 2": only checkpoint-2 survives (with 3 captions per face, the draws must resume too)
    resumed.mkdir()
    os.rename(full / "checkpoint-2", resumed / "checkpoint-2")
    run(train_unet, unet_resume_argv(vae_dir, resumed, dataset) + ["--resume_from_checkpoint", "latest"])
    for folder, name in (("unet", None), ("text_encoder", "model.safetensors"), ("checkpoint-4/unet_ema", None)):
        kwargs = {"name": name} if name else {}
        assert_same_weights(weights(full / folder, **kwargs), weights(resumed / folder, **kwargs))
    assert json.loads((resumed / "checkpoint-4/unet_ema/ema_state.json").read_text())["optimization_step"] == 4
    # the card's wall time covers the whole run: the first leg's time travelled in checkpoint-2
    first_leg = json.loads((resumed / "checkpoint-2" / "training_time.json").read_text())
    assert first_leg["runs"] == 1 and first_leg["wall_time_s"] > 0
    assert json.loads((resumed / "checkpoint-4" / "training_time.json").read_text())["runs"] == 2
    assert "min over 2 runs (resumed from checkpoints)" in (resumed / "README.md").read_text()
    # so do the last 100 steps' losses: the card's final loss is the whole run's, not the resumed leg's
    assert final_loss_line((resumed / "README.md").read_text()) == final_loss_line((full / "README.md").read_text())
    assert "runs (resumed" not in (full / "README.md").read_text()
    # the resumed run used the checkpoint's tokenizer: a rebuilt one can number the merges differently
    saved = CLIPTokenizer.from_pretrained(resumed / "checkpoint-2" / "tokenizer")
    assert saved.get_vocab() == CLIPTokenizer.from_pretrained(resumed / "tokenizer").get_vocab()
    if captions_per_image > 1:  # every caption of a face is in the table the steps draw from
        assert re.search(r"24 images \(3 captions each at most\), (\d+) distinct", caplog.text)
        assert int(re.search(r"(\d+) distinct captions", caplog.text).group(1)) > 24


def test_resuming_an_earlier_checkpoint_replaces_the_later_ones(tmp_path, caplog):
    """Resumed from checkpoint-2 of a run that reached checkpoint-6, the run's first save deletes checkpoints 4 and
    6 (they were kept, and pruned before the new ones, so that `latest` went back to the abandoned run)."""
    out = tmp_path / "vae"
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, *TINY_VAE, "--num_validation_images", 2]
    run(train_vae, [*argv, "--max_train_steps", 6, "--checkpointing_steps", 2])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    caplog.set_level(logging.INFO)
    again = [*argv, "--max_train_steps", 3, "--checkpointing_steps", 1, "--checkpoints_total_limit", 2]
    run(train_vae, [*again, "--learning_rate", 1e-5, "--resume_from_checkpoint", "checkpoint-2"])
    assert "the later checkpoints ['checkpoint-4', 'checkpoint-6'] in" in caplog.text
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert tu.resolve_resume_checkpoint(str(out), "latest") == str(out / "checkpoint-3")


def test_resuming_with_another_frozen_vae_or_text_encoder_is_refused(vae_dir, tmp_path):
    """Another VAE encoder (latent space) or frozen text encoder half-way through a UNet run: refused before the
    data (it resumed without a word). A decoder fine-tuned since decodes the same latents: accepted."""
    out = tmp_path / "unet"
    argv = unet_resume_argv(vae_dir, out)
    argv[argv.index("--max_train_steps") + 1] = 2
    run(train_unet, argv)
    assert json.loads((out / "checkpoint-2" / "frozen_models.json").read_text()).keys() == {"vae"}
    vae = SmallVAE.from_pretrained(vae_dir / "vae")
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(0.1)
    vae.save_pretrained(tmp_path / "new-decoder" / "vae")
    with torch.no_grad():
        vae.encoder.conv_in.bias.add_(0.1)
    vae.save_pretrained(tmp_path / "new-encoder" / "vae")
    argv[argv.index("--max_train_steps") + 1] = 3
    resume = ["--resume_from_checkpoint", "latest"]
    with mock.patch.object(tu, "load_train_dataset", side_effect=AssertionError("data loaded")):
        with pytest.raises(ValueError, match="--pretrained_vae_model_name_or_path: the frozen vae differs from"):
            run(train_unet, [*argv, *resume, "--pretrained_vae_model_name_or_path", tmp_path / "new-encoder"])
    run(train_unet, [*argv, *resume, "--pretrained_vae_model_name_or_path", tmp_path / "new-decoder"])
    assert (out / "checkpoint-3").is_dir()
    # a frozen pretrained text encoder: its weights are part of the fingerprint too
    clip = tmp_path / "clip"
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    tokenizer.save_pretrained(clip)
    build_text_encoder(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1).save_pretrained(clip)
    frozen_argv = unet_resume_argv(vae_dir, tmp_path / "frozen-clip") + ["--pretrained_text_encoder", clip]
    frozen_argv[frozen_argv.index("--max_train_steps") + 1] = 2
    run(train_unet, frozen_argv)
    torch.manual_seed(1)
    build_text_encoder(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1).save_pretrained(clip)
    frozen_argv[frozen_argv.index("--max_train_steps") + 1] = 3
    with pytest.raises(ValueError, match="--pretrained_text_encoder: the frozen text_encoder differs from"):
        run(train_unet, [*frozen_argv, *resume])


def final_loss_line(card: str) -> str:
    return re.search(r"\| final_train_loss .*", card).group(0)


def write_noise_imagefolder(folder: Path, size: tuple, num_images: int) -> Path:
    """Random-pixel images (every crop window differs) with captions."""
    folder.mkdir(parents=True)
    pixels = torch.randint(0, 256, (num_images, size[1], size[0], 3), generator=torch.Generator().manual_seed(0))
    with open(folder / "metadata.jsonl", "w") as f:
        for i, image in enumerate(pixels.to(torch.uint8).numpy()):
            Image.fromarray(image).save(folder / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": f"Cartoon face {i % 2}"}) + "\n")
    return folder


def run_then_resume_from_step_1(script, argv, tmp_path):
    """Runs `script` uninterrupted into tmp_path/full, then from a copy of its checkpoint-1 into tmp_path/resumed."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run(script, argv + ["--output_dir", full])
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    run(script, argv + ["--output_dir", resumed, "--resume_from_checkpoint", "latest"])
    return full, resumed


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_with_random_crops_matches_an_uninterrupted_run(tmp_path, num_workers):
    # 20x16 images at --resolution 16 get a random crop each time they are loaded; its generator was the
    # transform's own (restarted by a resumed run) or the DataLoader worker's (seeded from the loader's generator,
    # which a resumed run had not advanced, and the skipped batches shifted between the workers): every weight
    # of the resumed run differed. 8 training images, batch 4: resumed at step 1, mid-epoch, into epoch 2.
    folder = write_noise_imagefolder(tmp_path / "images", (20, 16), 12)
    argv = [*COMMON, "--train_data_dir", folder, "--resolution", 16, *TINY_VAE, "--num_validation_images", 4]
    argv += ["--train_batch_size", 4, "--max_train_steps", 3, "--checkpointing_steps", 1]
    argv += ["--dataloader_num_workers", num_workers]
    full, resumed = run_then_resume_from_step_1(train_vae, argv, tmp_path)
    assert_same_weights(weights(full / "vae"), weights(resumed / "vae"))
    assert (full / "vae" / "config.json").read_text() == (resumed / "vae" / "config.json").read_text()  # scaling


def test_spawned_data_loader_workers_load_the_same_batches():
    """macOS and Windows start DataLoader workers with "spawn", which pickles the data set and `collate_fn`:
    train_vae's lambda and the transform's closure could not be pickled (`--dataloader_num_workers 1` crashed
    before the first step), and a torch.Generator inside crashed the worker on Linux with "spawn".
    The scripts keep their workers across epochs (a spawned worker takes seconds to start, every epoch: a small run
    on macOS or Windows trained 20x slower with one worker), so the epoch set in the main process must reach the
    worker's copy of the data set: each epoch crops anew, as in the main process."""
    import argparse

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)) for _ in range(8)]
    dataset = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    args = argparse.Namespace(seed=0, resolution=16, center_crop=False)  # 20x16: a random crop per image
    data = tu.TrainingImages(dataset, tu.image_transform(args), seed=0)
    spawned = {"num_workers": 1, "multiprocessing_context": "spawn", "persistent_workers": True}
    loaders = [
        torch.utils.data.DataLoader(data, batch_size=4, collate_fn=tu.stack_pixel_values, **context)
        for context in ({}, spawned)
    ]
    batches = []
    for epoch in (0, 1, 2):
        data.set_epoch(epoch)
        in_process, in_worker = (torch.cat(list(loader)) for loader in loaders)
        assert in_process.shape == (8, 3, 16, 16) and torch.equal(in_process, in_worker)
        batches.append(in_process)
    assert not torch.equal(batches[0], batches[1]) and not torch.equal(batches[1], batches[2])


def test_unet_without_cached_latents_resumes_with_the_same_random_crops(vae_dir, tmp_path):
    folder = write_noise_imagefolder(tmp_path / "images", (20, 16), 8)
    argv = [*COMMON, "--train_data_dir", folder, "--resolution", 16, "--unet_config", TINY_UNET, "--no-cache_latents"]
    argv += ["--pretrained_vae_model_name_or_path", vae_dir, "--validation_prompts", "Cartoon face 0"]
    argv += ["--train_batch_size", 4, "--max_train_steps", 3, "--checkpointing_steps", 1]
    full, resumed = run_then_resume_from_step_1(train_unet, argv, tmp_path)
    assert_same_weights(weights(full / "unet"), weights(resumed / "unet"))


def test_training_images_crop_each_row_by_seed_epoch_and_row():
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (16, 1, 3))  # pixel value = x: reads the crop back
    dataset = datasets.Dataset.from_dict({"image": [Image.fromarray(ramp)] * 16}).cast_column(
        "image", datasets.Image()
    )
    rows = tu.TrainingImages(
        dataset, tu.image_transform(train_vae.parse_args(["--dataset_name", FACES, "--resolution", "16"])), seed=0
    )

    def offsets(indices):
        return [round((row["pixel_values"][0, 0, 0].item() + 1) * 127.5) for row in rows.__getitems__(indices)]

    epoch_0 = offsets(range(16))
    assert offsets([5, 3]) == [epoch_0[5], epoch_0[3]] and rows[7]["index"] == 7  # whatever the batch or order
    assert len(set(epoch_0)) > 8  # a crop of its own for each row
    rows.set_epoch(1)
    assert offsets(range(16)) != epoch_0  # and new ones every epoch
    assert tu.TrainingImages(dataset)[3] == {"index": 3}  # no transform: the rows of a cache


def test_text_encoder_warmup_steps_set_the_ramp_after_the_freeze(vae_dir, tmp_path):
    argv = unet_resume_argv(vae_dir, tmp_path / "ramp") + ["--text_encoder_freeze_steps", 1]
    run(train_unet, argv + ["--text_encoder_warmup_steps", 4])
    unet_group, text_group = torch.load(tmp_path / "ramp" / "checkpoint-2" / "optimizer.bin", weights_only=True)[
        "param_groups"
    ]
    assert text_group["lr"] / unet_group["lr"] == pytest.approx(0.5)  # step 2: 1 step frozen, then 2/4 of the ramp
    with pytest.raises(ValueError, match="--text_encoder_warmup_steps must be >= 0 and comes with"):
        train_unet.parse_args(["--dataset_name", FACES, "--output_dir", "x", "--text_encoder_warmup_steps", "9"])


def test_a_resumed_run_takes_the_checkpoints_tokenizer(tmp_path):
    captions = ["a red cat", "a blue dog", "a red dog"]
    built = tu.build_or_resume_tokenizer(captions, None, vocab_size=600)
    checkpoint = tmp_path / "checkpoint-7"
    built.save_pretrained(checkpoint / "tokenizer")
    other = tu.build_or_resume_tokenizer(["zebra stripes"], str(checkpoint), vocab_size=600)
    assert other.get_vocab() == built.get_vocab()  # the checkpoint's, whatever the captions say now
    (tmp_path / "checkpoint-9").mkdir()  # an older sdscratch's checkpoint: no tokenizer/
    with pytest.raises(ValueError, match="holds no tokenizer/.*Copy the run's tokenizer"):
        tu.build_or_resume_tokenizer(captions, str(tmp_path / "checkpoint-9"), vocab_size=600)


def test_caption_table_and_draws():
    unique, rows, counts = tu.caption_table([["b", "a"], ["c"], ["a", "", "d"]])
    assert unique == ["a", "b", "c", "d", ""]  # "" last: the unconditional caption
    assert rows.tolist() == [[1, 0, 1], [2, 2, 2], [0, 4, 3]] and counts.tolist() == [2, 1, 3]
    torch.manual_seed(0)
    drawn = tu.draw_caption_rows(rows, counts, torch.tensor([0, 1, 2] * 300)).view(300, 3)
    assert [set(drawn[:, i].tolist()) for i in range(3)] == [{0, 1}, {2}, {0, 3, 4}]  # never the padding
    assert (drawn[:, 2] == 3).float().mean() == pytest.approx(1 / 3, abs=0.08)  # uniform
    _, single, ones = tu.caption_table([["x"], ["y"]])
    state = torch.get_rng_state()  # one caption per image: no draw, so such runs keep their random stream
    assert tu.draw_caption_rows(single, ones, torch.tensor([1, 0])).tolist() == [1, 0]
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match="image 1 has no caption"):
        tu.caption_table([["x"], []])


def test_tokenize_captions_pads_as_the_pipeline_and_warns_about_cut_captions(caplog):
    tokenizer = build_tokenizer(["a red cat", "a blue dog"] * 2, model_max_length=6, vocab_size=600)
    fits, cut = "a red cat dog", "a red cat dog cat"  # 4 and 5 words: 6 and 7 tokens with <|startoftext|> / end
    with caplog.at_level(logging.WARNING):
        ids = tu.tokenize_captions(tokenizer, ["", fits])
    assert ids.shape == (2, 6) and "truncated" not in caplog.text  # exactly model_max_length: nothing cut
    pipe_ids = tokenizer(["", fits], padding="max_length", max_length=6, truncation=True, return_tensors="pt")
    assert torch.equal(ids, pipe_ids.input_ids)
    with caplog.at_level(logging.WARNING):
        assert tu.tokenize_captions(tokenizer, [fits, cut]).shape == (2, 6)
    assert "1 of 2 distinct captions are longer than the tokenizer's model_max_length=6 tokens" in caplog.text
    assert repr(cut) in caplog.text and "--unet_config" in caplog.text


def test_a_frozen_pretrained_text_encoder_goes_to_the_training_device(tmp_path):
    # accelerate moves only the models it prepares; a frozen encoder left on the CPU made the validation pipeline
    # (on the UNet's GPU) feed CUDA ids to CPU weights
    tokenizer = build_tokenizer(["a red cat", "a blue dog"] * 2, model_max_length=8, vocab_size=600)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    encoder = build_text_encoder(
        tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    encoder.save_pretrained(tmp_path / "text_encoder")
    meta = torch.device("meta")  # stands in for a GPU on this CPU-only test machine
    for extra, expected in (([], meta), (["--train_text_encoder"], torch.device("cpu"))):  # trained: prepare moves it
        args = train_unet.parse_args(["--dataset_name", FACES, "--pretrained_text_encoder", str(tmp_path), *extra])
        _, text_encoder = tu.build_text_components(args, {}, [], device=meta)
        assert text_encoder.device == expected and text_encoder.training is False


def test_pixel_space_digits_with_a_frozen_pretrained_text_encoder(unet_dir, tmp_path):
    out = tmp_path / "digits"
    argv = [*COMMON, "--dataset_name", "builtin:digits", "--resolution", 16, "--output_dir", out]
    argv += ["--unet_config", TINY_UNET, "--max_train_samples", 16, "--num_train_epochs", 1, "--validation_prompts", 7]
    argv += ["--pretrained_text_encoder", unet_dir, "--no-cache_latents", "--dataloader_num_workers", 1]
    argv += ["--mixed_precision", "bf16", "--gradient_checkpointing", "--block_out_channels", 16, 16]
    argv += ["--num_train_timesteps", 500]
    run(train_unet, argv)
    pipe = CartoonFacePipeline.from_pretrained(out)
    assert pipe.vae is None and pipe.unet.config.in_channels == 3 and pipe.unet.config.block_out_channels == [16, 16]
    assert pipe.scheduler.config.num_train_timesteps == 500
    assert "Steps: 2 " in (out / "README.md").read_text()  # 16 images / batch 8, one epoch
    assert_same_weights(
        weights(unet_dir / "text_encoder", "model.safetensors"), weights(out / "text_encoder", "model.safetensors")
    )
    assert pipe("7", num_inference_steps=2, output_type="pt").images.shape[-2:] == (16, 16)


def test_digits_recipe_trains_a_grayscale_pixel_space_model(tmp_path):
    # training/configs/digits.json (the shipped recipe) asks for 1 channel: images are read as grayscale and the
    # UNet, the saved pipeline and its images have 1 channel.
    out = tmp_path / "digits-gray"
    argv = [*COMMON, "--dataset_name", "builtin:digits", "--resolution", 16, "--output_dir", out]
    argv += ["--unet_config", ROOT / "training" / "configs" / "digits.json", "--block_out_channels", 8, 16, 16]
    argv += ["--max_train_samples", 16, "--num_train_epochs", 1, "--validation_prompts", "3"]
    run(train_unet, argv)
    pipe = CartoonFacePipeline.from_pretrained(out)
    assert pipe.unet.config.in_channels == pipe.unet.config.out_channels == 1
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    image = pipe("3", num_inference_steps=2, output_type="pil").images[0]
    assert image.mode == "L" and image.size == (16, 16)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def test_two_processes_end_with_identical_weights_and_only_rank_0_writes(vae_dir, tmp_path):
    out, digests = tmp_path / "ddp", tmp_path / "digests"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env["SDSCRATCH_RANK_DIGEST_DIR"] = str(digests)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += [
        "--num_machines",
        "1",
        "--mixed_precision",
        "bf16",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        free_port(),
    ]
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 2, "--unet_config", TINY_UNET]
    argv += ["--pretrained_vae_model_name_or_path", vae_dir, "--checkpointing_steps", 2, "--no-cache_latents"]
    argv += ["--train_batch_size", 4, "--use_ema", "--validation_prompts", "Cartoon face"]
    result = subprocess.run(
        [*launch, str(ROOT / "training" / "train_unet.py"), *map(str, argv)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MULTI_CPU" in result.stderr and "Num processes: 2" in result.stderr
    rank0, rank1 = (json.loads((digests / f"rank{i}.json").read_text()) for i in range(2))
    assert rank0 == rank1 and set(rank0) == {"unet", "text_encoder"}
    # one set of outputs; rank 1 only adds its own RNG state to the checkpoint (accelerate's layout)
    assert sorted(p.name for p in (out / "checkpoint-2").iterdir()) == [
        "frozen_models.json", "noise_scheduler", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl",
        "scheduler.bin", "text_encoder", "text_encoder_ema", "tokenizer", "training_time.json", "unet", "unet_ema",
    ]  # fmt: skip
    # each process drew its own noise, timesteps and caption drops: their RNG streams differ
    rng0, rng1 = (accelerate_load(out / "checkpoint-2" / f"random_states_{i}.pkl") for i in range(2))
    assert not torch.equal(rng0["torch_manual_seed"], rng1["torch_manual_seed"])
    assert result.stdout.count("Steps: 100%") + result.stderr.count("Steps: 100%") >= 1
    # the card states the total batch of a step, as diffusers does: per process x processes x accumulation
    assert "Steps: 2 at a total batch size of 8 (4 per process x 2 process(es)" in (out / "README.md").read_text()
    CartoonFacePipeline.from_pretrained(out)


# ---- bad input: clear errors before training starts ----
def test_missing_columns_are_listed(tmp_path):
    folder = write_imagefolder(str(tmp_path / "images"), 4)
    argv = [*COMMON, "--train_data_dir", folder, "--output_dir", tmp_path / "o"]
    with pytest.raises(ValueError, match="caption_column='nope' is not a column.*'image'.*'text'"):
        run(train_vae, [*argv, *TINY_VAE, "--caption_column", "nope"])
    with pytest.raises(ValueError, match="image_column='picture' is not a column.*'image'.*'text'"):
        run(train_unet, [*argv, "--image_column", "picture"])


def test_train_vae_prints_every_held_out_metric_its_json_holds(tmp_path, capsys):
    # docs/training.md: reconstruction_metrics.json's "MSE, PSNR, SSIM, MS-SSIM ..., also printed": MS-SSIM was not
    run(train_vae, [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path, "--max_train_steps", 1, *TINY_VAE])
    metrics = json.loads((tmp_path / "reconstruction_metrics.json").read_text())
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("held-out reconstruction"))
    assert f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, MS-SSIM {metrics['ms_ssim']:.4f}" in line
    assert f"({metrics['ms_ssim_scales']} scales)" in line


def test_vae_trains_on_a_folder_of_images_without_captions(tmp_path):
    # the VAE reads no captions: images alone (no metadata.jsonl) must do, of any size, mode and orientation
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(
        Image.new(mode, (24 + 4 * i, 20), 90) for i, mode in enumerate(["RGB", "L", "RGBA"] * 2)
    ):
        image.save(folder / f"{i}.png")
    out = tmp_path / "o"
    run(train_vae, [*COMMON, "--train_data_dir", folder, "--output_dir", out, "--max_train_steps", 1, *TINY_VAE,
                    "--resolution", 16, "--train_batch_size", 2, "--num_validation_images", 2])  # fmt: skip
    assert (out / "vae" / "config.json").is_file()
    with pytest.raises(ValueError, match="no caption source found"):  # train_unet needs the captions
        run(
            train_unet,
            [*COMMON, "--train_data_dir", folder, "--output_dir", tmp_path / "u", "--unet_config", TINY_UNET],
        )


def test_data_flags_reach_the_loader():
    args = train_vae.parse_args(["--dataset_name", "user/set", "--dataset_config_name", "small", "--cache_dir", "c"])
    with mock.patch("sdscratch.data.loading.load_image_caption_dataset") as load:
        tu.load_train_dataset(args)
    assert load.call_args.kwargs["dataset_config_name"] == "small" and load.call_args.kwargs["cache_dir"] == "c"


def test_resolution_not_divisible_by_the_vae_factor(vae_dir, tmp_path):
    with pytest.raises(ValueError, match="--resolution 63 must be divisible by the VAE's downsampling factor 4"):
        run(train_unet, [*COMMON, "--dataset_name", FACES, "--resolution", 63, "--output_dir", tmp_path,
                         "--pretrained_vae_model_name_or_path", vae_dir])  # fmt: skip
    with pytest.raises(ValueError, match="divisible by the VAE's downsampling factor 4"):
        run(train_vae, [*COMMON, "--dataset_name", FACES, "--resolution", 63, "--output_dir", tmp_path, *TINY_VAE])


def test_resolution_not_divisible_by_the_unet_factor_is_refused_before_the_data(vae_dir, tmp_path, monkeypatch):
    # a user's 30x30 digits on the digits recipe (3 levels: factor 4), in pixel space and in a tiny VAE's latents
    monkeypatch.setattr(tu, "load_train_dataset", lambda args: pytest.fail("loaded the data set first"))
    digits = [*COMMON, "--dataset_name", "builtin:digits", "--output_dir", tmp_path / "o"]
    digits += ["--unet_config", ROOT / "training" / "configs" / "digits.json"]
    pattern = r"--resolution 30 must be divisible by 4, in pixel space the UNet's .*\[32, 64, 64\]: e.g. 28 or 32"
    with pytest.raises(ValueError, match=pattern):
        run(train_unet, [*digits, "--resolution", 30])
    with pytest.raises(ValueError, match=r"--resolution 4 must be divisible by 16, the VAE's downsampling factor 4 x"):
        run(train_unet, [*digits, "--resolution", 4, "--pretrained_vae_model_name_or_path", vae_dir])
    assert not (tmp_path / "o").exists()


def test_a_vae_folder_that_is_not_a_small_vae(unet_dir, tmp_path):
    with pytest.raises(ValueError, match="holds a SmallUNet, not a SmallVAE"):
        run(train_unet, [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path,
                         "--pretrained_vae_model_name_or_path", unet_dir / "unet"])  # fmt: skip
    with pytest.raises(ValueError, match="no config.json"):
        run(train_unet, [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path,
                         "--pretrained_vae_model_name_or_path", tmp_path])  # fmt: skip


def test_random_crops_are_windows_of_each_image():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    torch.manual_seed(0)
    crops = train_vae.random_crops(images, 4)
    assert crops.shape == (2, 3, 4, 4)
    for image, crop in zip(images, crops):
        windows = image.unfold(1, 4, 1).unfold(2, 4, 1)  # (3, 5, 5, 4, 4): every 4x4 window
        assert any(torch.equal(windows[:, i, j], crop) for i in range(5) for j in range(5))
    torch.manual_seed(0)
    assert torch.equal(train_vae.random_crops(images, 4), crops)  # the global RNG, which checkpoints save


def test_train_vae_on_crops_validates_at_full_resolution(tmp_path, monkeypatch):
    calls, crop = [], train_vae.random_crops
    monkeypatch.setattr(
        train_vae, "random_crops", lambda images, size: calls.append((tuple(images.shape), size)) or crop(images, size)
    )
    out = tmp_path / "crops"
    run(train_vae, [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 2, "--crop_size", 32,
                    *TINY_VAE])  # fmt: skip
    assert calls == [((8, 3, 64, 64), 32)] * 2
    assert SmallVAE.from_pretrained(out / "vae").config.sample_size == 64
    assert (out / "reconstruction_metrics.json").is_file()
    with pytest.raises(ValueError, match="--crop_size 30 must be divisible by the VAE's downsampling factor 4"):
        run(
            train_vae, [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / "x", "--crop_size", 30, *TINY_VAE]
        )
    with pytest.raises(ValueError, match=r"--crop_size must be in \[1, --resolution=64\], got 65"):
        train_vae.parse_args(["--dataset_name", FACES, "--crop_size", "65"])


def test_decoder_only_fine_tuning_keeps_the_encoder_and_the_scaling_factor(vae_dir, tmp_path):
    out = tmp_path / "decoder"
    run(train_vae, [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 2,
                    "--pretrained_vae_model_name_or_path", vae_dir, "--train_decoder_only", "--learning_rate", 1e-2])  # fmt: skip
    before, after = weights(vae_dir / "vae"), weights(out / "vae")
    assert before.keys() == after.keys()
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder and len(encoder) + len(decoder) == len(before)
    assert_same_weights({k: before[k] for k in encoder}, {k: after[k] for k in encoder})
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    old, new = SmallVAE.from_pretrained(vae_dir / "vae"), SmallVAE.from_pretrained(out / "vae")
    config = {k: v for k, v in new.config.items() if k != "_name_or_path"}
    assert config == {k: v for k, v in old.config.items() if k != "_name_or_path"}  # incl. the scaling_factor
    card = (out / "README.md").read_text()
    assert f"decoder fine-tuned, encoder frozen from `{vae_dir}`" in card


def test_decoder_only_flags_are_checked(vae_dir, tmp_path):
    with pytest.raises(ValueError, match="--train_decoder_only fine-tunes a trained VAE"):
        train_vae.parse_args(["--train_decoder_only", "--dataset_name", FACES])
    with pytest.raises(ValueError, match="sets the architecture; drop --block_out_channels, --vae_config"):
        train_vae.parse_args(["--pretrained_vae_model_name_or_path", str(vae_dir), "--block_out_channels", "8",
                              "--vae_config", "c.json", "--dataset_name", FACES])  # fmt: skip


def test_resume_from_nowhere(tmp_path, caplog):
    with pytest.raises(ValueError, match="checkpoint-7.*not a checkpoint-<step> folder.*none"):
        run(train_vae, [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path, "--resume_from_checkpoint",
                        tmp_path / "checkpoint-7", *TINY_VAE])  # fmt: skip
    assert tu.resolve_resume_checkpoint(str(tmp_path), "latest") is None
    assert "no checkpoint" in caplog.text and "starting a new run" in caplog.text


def test_an_output_dir_with_an_incompatible_previous_run(vae_dir, tmp_path):
    # vae_dir holds checkpoint-4 of a VAE with block_out_channels (8, 16, 16): another architecture must not reuse it
    with pytest.raises(ValueError, match="incompatible run.*block_out_channels"):
        other = tmp_path / "vae_config.json"
        other.write_text(json.dumps({"block_out_channels": [8, 16, 32], "latent_channels": 4, "_class_name": "x"}))
        run(train_vae, [*COMMON, "--dataset_name", FACES, "--output_dir", vae_dir, "--resume_from_checkpoint",
                        "latest", "--vae_config", other])  # fmt: skip
    with pytest.raises(ValueError, match="holds no unet/ folder"):
        run(train_unet, [*COMMON, "--dataset_name", FACES, "--output_dir", vae_dir, "--unet_config", TINY_UNET,
                         "--resume_from_checkpoint", "latest"])  # fmt: skip


def test_resuming_with_another_noise_schedule_or_target_is_refused(vae_dir, tmp_path):
    """A checkpoint keeps its training noise scheduler; resuming it with another --prediction_type or beta schedule
    would silently change what the UNet learns half-way, so it is refused before any step (diffusers does not
    check)."""

    def with_flag(argv, flag, value):
        return [value if i > 0 and argv[i - 1] == flag else a for i, a in enumerate(argv)]

    argv = with_flag(unet_resume_argv(vae_dir, tmp_path), "--max_train_steps", 2)  # checkpoint-2
    run(train_unet, argv)
    saved = json.loads((tmp_path / "checkpoint-2" / "noise_scheduler" / "scheduler_config.json").read_text())
    assert saved["prediction_type"] == "v_prediction" and saved["beta_schedule"] == "linear"
    resume = ["--max_train_steps", 3, "--resume_from_checkpoint", "latest"]
    for flag, value, detail in [
        ("--prediction_type", "epsilon", "prediction_type: 'v_prediction' there vs 'epsilon' now"),
        ("--beta_schedule", "scaled_linear", "beta_schedule: 'linear' there vs 'scaled_linear' now"),
    ]:
        with (
            mock.patch.object(tu, "load_train_dataset") as load,  # refused before the data (and a frozen CLIP's
            pytest.raises(ValueError, match=f"another noise schedule or target \\({detail}\\).*same --prediction"),
        ):  # embeddings of every caption) are loaded
            run(train_unet, with_flag(argv, flag, value) + resume)
        load.assert_not_called()
    assert not (tmp_path / "checkpoint-3").exists()
    run(train_unet, argv + resume)  # the same flags resume
    assert (tmp_path / "checkpoint-3").is_dir()


def test_latest_ignores_half_written_checkpoints(tmp_path):
    for step in (1, 2, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / ".tmp-checkpoint-4").mkdir()  # a crash while saving step 4
    assert tu.resolve_resume_checkpoint(str(tmp_path), "latest") == str(tmp_path / "checkpoint-3")
    assert [s for s, _ in tu.list_checkpoints(str(tmp_path))] == [1, 2, 3]


def test_fused_adamw_and_foreach_ema_match_the_plain_updates():
    """The fast optimizer and EMA paths the scripts use give the plain per-tensor results."""
    from argparse import Namespace

    from diffusers.training_utils import EMAModel

    args = Namespace(
        scale_lr=False, max_train_steps=5, num_train_epochs=1, learning_rate=1e-2, adam_beta1=0.9,
        adam_beta2=0.999, adam_weight_decay=1e-2, adam_epsilon=1e-8, lr_scheduler="constant", lr_warmup_steps=0,
    )  # fmt: skip
    torch.manual_seed(0)
    fast, plain = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    plain.load_state_dict(fast.state_dict())
    optimizer, _ = tu.make_optimizer_and_scheduler(args, fast.parameters(), mock.Mock(num_processes=1), 5)
    assert optimizer.defaults["fused"]
    reference = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=1e-2, foreach=False)
    ema_fast, ema_plain = tu.make_ema(fast, 0.99), EMAModel(plain.parameters(), 0.99, use_ema_warmup=True, power=2 / 3)
    x = torch.randn(16, 8)
    for _ in range(5):
        for model, opt, ema in ((fast, optimizer, ema_fast), (plain, reference, ema_plain)):
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            ema.step(model.parameters())
    for a, b in zip(fast.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(ema_fast.shadow_params, ema_plain.shadow_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert set(optimizer.state_dict()["state"][0]) == set(reference.state_dict()["state"][0])  # resumable either way


def test_text_encoder_lr_gives_the_text_encoder_its_own_parameter_group(unet_dir):
    state = torch.load(unet_dir / "checkpoint-2" / "optimizer.bin", weights_only=True)
    unet_group, text_group = state["param_groups"]  # linear decay after 1 warm-up step: both scaled alike
    assert text_group["initial_lr"] == pytest.approx(4e-3) and unet_group["initial_lr"] == pytest.approx(1e-3)
    assert text_group["lr"] / unet_group["lr"] == pytest.approx(4.0)
    assert unet_group["fused"] and len(unet_group["params"]) == len(weights(unet_dir / "unet"))


def test_text_encoder_lr_needs_a_trained_text_encoder():
    base = ["--dataset_name", FACES, "--output_dir", "x"]
    with pytest.raises(ValueError, match="--pretrained_text_encoder is frozen"):
        train_unet.parse_args([*base, "--text_encoder_lr", "1e-3", "--pretrained_text_encoder", "some/clip"])
    with pytest.raises(ValueError, match="--text_encoder_lr must be positive"):
        train_unet.parse_args([*base, "--text_encoder_lr", "0"])


def test_delay_param_group_holds_one_group_at_zero_then_ramps_it():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b]}], lr=1.0)
    scheduler = tu.accelerator.get_scheduler("constant_with_warmup", optimizer=optimizer, num_warmup_steps=2)
    tu.delay_param_group(scheduler, 1, delay_steps=3, warmup_steps=2)
    seen = []
    for _ in range(7):
        seen.append(scheduler.get_last_lr())
        optimizer.step()  # no gradients: a no-op, keeps torch's step-order warning quiet
        scheduler.step()
    assert [x[0] for x in seen] == pytest.approx([0.0, 0.5, 1, 1, 1, 1, 1])
    assert [x[1] for x in seen] == pytest.approx([0.0, 0.0, 0.0, 0.5, 1, 1, 1])
    # steps counted per process after accelerate's prepare: 2 processes, delay 1 optimizer step = 2 scheduler steps
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b]}], lr=1.0)
    scheduler = tu.accelerator.get_scheduler("constant", optimizer=optimizer)
    tu.delay_param_group(scheduler, 1, delay_steps=1, warmup_steps=0, num_processes=2)
    lrs = []
    for _ in range(3):
        lrs.append(scheduler.get_last_lr()[1])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.0, 0.0, 1.0]
    with pytest.raises(TypeError, match="LambdaLR"):
        tu.delay_param_group(torch.optim.lr_scheduler.StepLR(optimizer, 1), 1, 1, 1)
    with pytest.raises(ValueError, match="delay_steps"):
        tu.delay_param_group(scheduler, 1, -1, 1)


def test_delay_param_group_ramps_alike_with_any_number_of_processes():
    def optimizer_step_lrs(num_processes):
        parameters = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))]
        optimizer = torch.optim.AdamW([{"params": [parameters[0]]}, {"params": [parameters[1]]}], lr=1.0)
        scheduler = tu.accelerator.get_scheduler("constant", optimizer=optimizer)
        tu.delay_param_group(scheduler, 1, delay_steps=1, warmup_steps=4, num_processes=num_processes)
        lrs = []
        for _ in range(6):
            lrs.append(scheduler.get_last_lr()[1])
            optimizer.step()
            for _ in range(num_processes):  # accelerate's prepared scheduler: one step per process
                scheduler.step()
        return lrs

    assert optimizer_step_lrs(1) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert optimizer_step_lrs(2) == pytest.approx(optimizer_step_lrs(1))
    assert optimizer_step_lrs(3) == pytest.approx(optimizer_step_lrs(1))


def test_seed_each_process_gives_the_other_processes_their_own_stream():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tu.seed_each_process(mock.Mock(process_index=0), 7)  # the main process keeps its stream
    assert torch.equal(torch.rand(3), expected)
    draws = []
    for process_index in (1, 2):
        tu.seed_each_process(mock.Mock(process_index=process_index), 7)
        draws.append(torch.rand(3))
    torch.manual_seed(8)
    assert torch.equal(draws[0], torch.rand(3)) and not torch.equal(draws[0], draws[1])


def test_a_checkpoint_of_another_number_of_processes_resumes_on_the_same_lr_schedule(vae_dir, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    linear = ["--lr_scheduler", "linear", "--max_train_steps", 4]
    run(train_unet, unet_resume_argv(vae_dir, full) + linear)
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    # what 2 processes write: accelerate's prepared scheduler steps once per process per optimizer step, and each
    # process saves its random state
    state = torch.load(resumed / "checkpoint-2" / "scheduler.bin", weights_only=True)
    state["last_epoch"], state["_step_count"] = 2 * state["last_epoch"], 2 * state["last_epoch"] + 1
    torch.save(state, resumed / "checkpoint-2" / "scheduler.bin")
    shutil.copy(resumed / "checkpoint-2" / "random_states_0.pkl", resumed / "checkpoint-2" / "random_states_1.pkl")
    run(train_unet, unet_resume_argv(vae_dir, resumed) + linear + ["--resume_from_checkpoint", "latest"])
    assert torch.load(resumed / "checkpoint-4" / "scheduler.bin", weights_only=True)["last_epoch"] == 4
    assert_same_weights(weights(full / "unet"), weights(resumed / "unet"))  # step 3 at the same learning rate


def test_text_encoder_freeze_steps_hold_the_text_encoder_then_release_it_across_a_resume(vae_dir, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    freeze = ["--text_encoder_freeze_steps", 3, "--lr_warmup_steps", 1, "--lr_scheduler", "constant_with_warmup"]
    argv = unet_resume_argv(vae_dir, full) + [*freeze, "--checkpointing_steps", 1]
    run(train_unet, argv)

    def text_encoder(step):
        return weights(full / f"checkpoint-{step}" / "text_encoder", "model.safetensors")

    assert_same_weights(text_encoder(1), text_encoder(3))  # steps 2 and 3 left it exactly as it was
    assert text_encoder(3).keys() == text_encoder(4).keys()
    assert any(not torch.equal(text_encoder(3)[k], text_encoder(4)[k]) for k in text_encoder(3))  # released
    unet1, unet2 = weights(full / "checkpoint-1" / "unet"), weights(full / "checkpoint-2" / "unet")
    assert any(not torch.equal(unet1[k], unet2[k]) for k in unet1)  # the UNet trained all along
    resumed.mkdir()  # interrupted inside the frozen phase: the resumed run releases the encoder at the same step
    os.rename(full / "checkpoint-2", resumed / "checkpoint-2")
    run(train_unet, unet_resume_argv(vae_dir, resumed) + [*freeze, "--resume_from_checkpoint", "latest"])
    assert_same_weights(
        weights(full / "text_encoder", "model.safetensors"), weights(resumed / "text_encoder", "model.safetensors")
    )
    assert_same_weights(weights(full / "unet"), weights(resumed / "unet"))
    with pytest.raises(ValueError, match="--text_encoder_freeze_steps must be >= 0"):
        train_unet.parse_args(["--dataset_name", FACES, "--output_dir", "x", "--text_encoder_freeze_steps", "-1"])
    with pytest.raises(ValueError, match="--text_encoder_freeze_steps needs a text encoder to train"):
        train_unet.parse_args(
            ["--dataset_name", FACES, "--output_dir", "x", "--text_encoder_freeze_steps", "5"]
            + ["--pretrained_text_encoder", "some/clip"]
        )


@pytest.mark.parametrize("main_process", [True, False])
def test_only_each_machines_main_process_logs_warnings(tmp_path, monkeypatch, main_process):
    """As diffusers' scripts: the other processes log errors only (each would repeat every warning)."""
    import diffusers
    import transformers

    libraries = (diffusers.utils.logging, transformers.utils.logging)
    saved = [library.get_verbosity() for library in libraries]
    ours = logging.getLogger("sdscratch")
    monkeypatch.setattr(ours, "level", ours.level)  # restored after the test
    monkeypatch.setattr(Accelerator, "is_local_main_process", property(lambda self: main_process))
    args = train_vae.parse_args(
        ["--dataset_name", "builtin:cartoon-faces", "--output_dir", str(tmp_path), "--report_to", "none"]
    )
    AcceleratorState._reset_state(True)
    try:
        tu.make_accelerator(args)
        verbosities = [library.get_verbosity() for library in libraries]
        assert verbosities == (saved if main_process else [logging.ERROR] * 2)
        assert (ours.getEffectiveLevel() == logging.ERROR) is not main_process
    finally:
        for library, verbosity in zip(libraries, saved):
            library.set_verbosity(verbosity)
        AcceleratorState._reset_state(True)


def test_idle_cores_are_reported_on_cpu():
    accelerator = mock.Mock(device=torch.device("cpu"), num_processes=1)
    with (
        mock.patch.dict(os.environ, {}, clear=False),
        mock.patch.object(tu.accelerator, "usable_cores", return_value=4),
        # accelerate's default 1
        mock.patch.object(tu.accelerator, "omp_threads_from_accelerate_launch", return_value=True),
    ):
        os.environ.pop("LOCAL_WORLD_SIZE", None)
        with mock.patch.object(torch, "get_num_threads", return_value=1):
            message = tu.idle_cores_message(accelerator)
        assert "3 core(s) stay idle" in message and "export OMP_NUM_THREADS=4" in message
        with mock.patch.object(torch, "get_num_threads", return_value=4):
            assert tu.idle_cores_message(accelerator) is None
        os.environ["LOCAL_WORLD_SIZE"] = "2"  # two processes of 2 threads fill 4 cores
        with mock.patch.object(torch, "get_num_threads", return_value=2):
            assert tu.idle_cores_message(accelerator) is None
        with mock.patch.object(torch, "get_num_threads", return_value=1):
            assert "--num_cpu_threads_per_process 2" in tu.idle_cores_message(accelerator)
    assert tu.idle_cores_message(mock.Mock(device=torch.device("cuda"), num_processes=1)) is None


def test_idle_cores_warning_only_for_accelerate_launch_default_threads(monkeypatch):
    """A user's own OMP_NUM_THREADS=1 (recipes/digits.sh) is not warned about; accelerate launch's default 1 is."""
    from sdscratch import _cpu

    accelerator = mock.Mock(device=torch.device("cpu"), num_processes=1)
    monkeypatch.setattr(tu.accelerator, "usable_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for name in _cpu.ACCELERATE_LAUNCH_MARKERS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # `OMP_NUM_THREADS=1 python train_unet.py`: no accelerate launch, the user's choice
    monkeypatch.setattr(_cpu, "_launcher_process", lambda: ({"OMP_NUM_THREADS": "1"}, ["bash"]))
    assert tu.idle_cores_message(accelerator) is None
    monkeypatch.setattr(_cpu, "_launcher_process", lambda: ({}, ["bash"]))
    assert tu.idle_cores_message(accelerator) is None
    # `accelerate launch train_unet.py` (what accelerate sets in the process it starts), OMP_NUM_THREADS not given
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    monkeypatch.setattr(_cpu, "_launcher_process", lambda: ({}, ["accelerate", "launch", "train_unet.py"]))
    assert "export OMP_NUM_THREADS=2" in tu.idle_cores_message(accelerator)
    monkeypatch.setattr(_cpu, "_launcher_process", lambda: None)  # no /proc: an accelerate launch is the default
    assert "1 core(s) stay idle" in tu.idle_cores_message(accelerator)
    # `OMP_NUM_THREADS=1 accelerate launch ...` (recipes/digits.sh) or `--num_cpu_threads_per_process 1`: chosen
    monkeypatch.setattr(_cpu, "_launcher_process", lambda: ({"OMP_NUM_THREADS": "1"}, ["accelerate", "launch"]))
    assert tu.idle_cores_message(accelerator) is None
    for cmdline in (
        ["accelerate", "launch", "--num_cpu_threads_per_process", "1"],
        ["--num_cpu_threads_per_process=1"],
    ):
        monkeypatch.setattr(_cpu, "_launcher_process", lambda cmdline=cmdline: ({}, cmdline))
        assert tu.idle_cores_message(accelerator) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="compares with the /proc reading")
def test_the_launcher_is_read_through_psutil_where_there_is_no_proc(monkeypatch):
    """macOS and Windows have no /proc: the parent's environment and command line come from psutil, so a user's
    own `OMP_NUM_THREADS` under `accelerate launch` is not taken for accelerate's default there."""
    from sdscratch import _cpu

    through_proc = _cpu._launcher_process()
    real_open = open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(_cpu, "open", no_proc, raising=False)  # _cpu's reads only (psutil reads /proc here)
    assert through_proc is not None and _cpu._launcher_process() == through_proc
    monkeypatch.setitem(sys.modules, "psutil", None)  # neither /proc nor psutil: unknown
    assert _cpu._launcher_process() is None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the launcher's environment from /proc")
def test_accelerate_default_threads_are_told_from_the_users_through_proc(tmp_path):
    """The real /proc reading, with a launcher process standing in for `accelerate launch` (which starts the script
    with ACCELERATE_* set and OMP_NUM_THREADS=1 unless its own environment has OMP_NUM_THREADS)."""
    cpu_py = Path(sdscratch.__file__).parent / "_cpu.py"
    child = (
        f"import importlib.util; spec = importlib.util.spec_from_file_location('c', {str(cpu_py)!r}); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "print(m.omp_threads_from_accelerate_launch())"
    )
    launcher = (
        "import os, subprocess, sys; env = dict(os.environ, ACCELERATE_MIXED_PRECISION='no', "
        "ACCELERATE_DYNAMO_BACKEND='NO', OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1')); "
        "sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1]], env=env).returncode)"
    )
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS" and not k.startswith("ACCELERATE_")}

    def launched(env: dict) -> str:
        result = subprocess.run(
            [sys.executable, "-c", launcher, child], env=env, capture_output=True, text=True, check=True
        )
        return result.stdout.strip()

    assert launched(base) == "True"  # the 1 is the launcher's default
    assert launched({**base, "OMP_NUM_THREADS": "1"}) == "False"  # the user's own 1


# ---- fixes: imagefolder data, finished runs, the Hub token, too little data, push order, flag checks ----
def assert_started_again_takes_no_step(script, argv, out: Path, model: str) -> None:
    """`argv` finished at step 2 with checkpoint-2: the same command again leaves the output folder as it is; cut
    off between that checkpoint and the final save (model folder and card gone), it writes them without a step."""
    before, card = weights(out / model), (out / "README.md").read_text()
    assert "Steps: 2 " in card
    run(script, argv)
    assert_same_weights(before, weights(out / model))
    assert (out / "README.md").read_text() == card
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    shutil.rmtree(out / model)
    (out / "README.md").unlink()
    run(script, argv)
    assert_same_weights(before, weights(out / model))
    assert "Steps: 2 " in (out / "README.md").read_text()


def test_unet_on_an_imagefolder_and_a_finished_run_started_again_takes_no_step(vae_dir, tmp_path):
    folder = write_imagefolder(str(tmp_path / "images"), 24)  # PNGs + metadata.jsonl; 3 steps an epoch
    out = tmp_path / "out"
    argv = [*COMMON, "--train_data_dir", folder, "--output_dir", out, "--unet_config", TINY_UNET]
    argv += ["--pretrained_vae_model_name_or_path", vae_dir, "--max_train_steps", 2, "--checkpointing_steps", 2]
    argv += ["--validation_prompts", "Cartoon face", "--resume_from_checkpoint", "latest"]
    run(train_unet, argv)  # no checkpoint yet: a new run
    card = (out / "README.md").read_text()
    assert f"\n- Data: imagefolder `{folder}`\n" in card  # one code span: no backticks nested in another
    assert "datasets:" not in card.split("---")[1]  # a local folder is no Hub data set
    # finished: the same command stops before the data and the latent cache (the recipe's re-run encoded 10,000)
    with mock.patch.object(tu, "load_train_dataset", side_effect=AssertionError("data loaded")):
        run(train_unet, argv)
    assert_started_again_takes_no_step(train_unet, argv, out, "unet")  # resumes at checkpoint-2 == max steps
    # written again without a step, the card keeps the run's final loss and speed (from the checkpoint), not 0
    assert final_loss_line((out / "README.md").read_text()) == final_loss_line(card)
    assert float(re.search(r"\| train samples/s \| (\S+) \|", (out / "README.md").read_text()).group(1)) > 0


def test_a_finished_vae_run_started_again_takes_no_step(tmp_path):
    out = tmp_path / "vae"
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 2, *TINY_VAE]
    # --checkpointing_steps beyond the run: its last step is saved all the same, so that it is not trained again
    argv += ["--checkpointing_steps", 100, "--num_validation_images", 4, "--resume_from_checkpoint", "latest"]
    run(train_vae, argv)
    assert_started_again_takes_no_step(train_vae, argv, out, "vae")
    # a finished run (trained without --push_to_hub, or its upload failed) is uploaded by the command with the flag
    before = weights(out / "vae")
    with (
        mock.patch.object(tu.cards, "create_repo") as create_repo,
        mock.patch.object(tu.cards, "upload_folder") as upload,
    ):
        create_repo.return_value.repo_id = "me/vae"
        run(train_vae, [*argv, "--push_to_hub"])
    upload.assert_called_once()
    assert upload.call_args.kwargs["folder_path"] == str(out) and upload.call_args.kwargs["repo_id"] == "me/vae"
    assert_same_weights(before, weights(out / "vae"))


def test_the_hub_token_reaches_neither_the_card_nor_the_trackers(unet_dir, vae_dir):
    card = (unet_dir / "README.md").read_text()
    assert "hf_fake" not in card and "--hub_token *** " in card
    for path in vae_dir.rglob("*"):  # tensorboard's hparams, the card, checkpoints
        assert not path.is_file() or b"hf_vae_secret" not in path.read_bytes(), path
    assert "--hub_token ***" in (vae_dir / "README.md").read_text()
    for script in (train_vae, train_unet, train_clip):
        for spelling in (["--hub_token", "sek"], ["--hub_token=sek"], ["--hub_tok", "sek"]):
            args = script.parse_args(["--dataset_name", FACES, *spelling, "--output_dir", "o"])
            assert args.hub_token == "sek" and "sek" not in args.command and "***" in args.command
            assert "hub_token" not in tu.tracker_config(args)


@pytest.mark.parametrize("script", [train_vae, train_unet, train_clip], ids=lambda m: m.__name__)
def test_fewer_images_than_one_batch(script, tmp_path):
    argv = ["--report_to", "none", "--dataset_name", FACES, "--max_train_samples", 12, "--train_batch_size", 16]
    argv += ["--output_dir", tmp_path / "o"]
    argv += {
        train_vae: [*TINY_VAE, "--num_validation_images", 2],
        train_unet: ["--unet_config", TINY_UNET],
        train_clip: ["--num_validation_images", 2],
    }[script]
    # the held-out images are named: the user gave 12 images, not the 10 left to train on
    held_out = "" if script is train_unet else r" \(12 in the data set, 2 held out for validation by --num_validation"
    with pytest.raises(ValueError, match=rf"1[02] training image\(s\){held_out}.* is fewer than one batch: "):
        run(script, argv)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_train_vae_on_one_image_asks_for_two(tmp_path):
    argv = ["--report_to", "none", "--dataset_name", FACES, "--max_train_samples", 1, "--train_batch_size", 1]
    with pytest.raises(ValueError, match="train_vae.py needs at least 2 images .* the data set has 1"):
        run(train_vae, [*argv, *TINY_VAE, "--output_dir", tmp_path / "o"])  # was an IndexError


def test_push_to_hub_creates_the_repo_before_any_work(tmp_path):
    out = tmp_path / "my-vae"
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 2, *TINY_VAE]
    with (
        mock.patch.object(tu.cards, "create_repo", side_effect=OSError("offline")) as create_repo,
        mock.patch.object(tu, "load_train_dataset") as load,
        mock.patch.object(tu.cards, "upload_folder") as upload,
    ):
        # named, not a bare huggingface_hub / httpx traceback
        with pytest.raises(
            ValueError, match="--push_to_hub: could not create the Hub repo 'my-vae' .*OSError: offline"
        ):
            run(train_vae, [*argv, "--push_to_hub"])
    create_repo.assert_called_once_with(repo_id="my-vae", exist_ok=True, token=None)
    load.assert_not_called()
    upload.assert_not_called()


def test_validation_grids_reach_wandb_as_in_diffusers(tmp_path):
    wandb = mock.Mock()
    wandb.name = "wandb"  # a --report_to wandb run logged its grids nowhere but in the output folder
    accelerator = mock.Mock(trackers=[wandb])
    images = [Image.new("RGB", (4, 4))] * 2
    path = tu.save_validation_grid(accelerator, images, 1, str(tmp_path), 3, "samples")
    (values,), kwargs = wandb.log_images.call_args
    assert list(values) == ["samples"] and values["samples"][0].size == (8, 4) and kwargs == {"step": 3}
    assert Path(path).is_file()


def test_push_folder_to_hub_leaves_out_the_logging_dir_used(tmp_path):
    with (
        mock.patch.object(tu.cards, "create_repo") as create_repo,
        mock.patch.object(tu.cards, "upload_folder") as upload,
    ):
        assert tu.push_folder_to_hub(str(tmp_path), "me/x", "t", logging_dir="tb") == "me/x"
        patterns = upload.call_args.kwargs["ignore_patterns"]
        assert "tb/*" in patterns and "logs/*" not in patterns and "checkpoint-*" in patterns
        tu.push_folder_to_hub(str(tmp_path), "me/x", "t", logging_dir="./runs/tb/")
        assert "runs/tb/*" in upload.call_args.kwargs["ignore_patterns"]
        tu.push_folder_to_hub(str(tmp_path), "me/x", "t", logging_dir=str(tmp_path.parent / "elsewhere"))
        assert not [p for p in upload.call_args.kwargs["ignore_patterns"] if "elsewhere" in p]
    create_repo.assert_not_called()


def test_model_card_datasets_list_hub_ids_only(tmp_path):
    for name in (str(tmp_path), "./faces", "builtin:cartoon-faces", "/no/such/folder"):
        assert tu.write_model_card(str(tmp_path), "t", "body", name, ["x"]).data.datasets is None, name
    assert tu.write_model_card(str(tmp_path), "t", "body", "lambdalabs/pokemon", ["x"]).data.datasets == [
        "lambdalabs/pokemon"
    ]


def test_model_card_is_never_left_half_written(tmp_path, monkeypatch):
    # the card, written last, marks a finished run: a write cut off must not leave a README.md behind
    def cut_off(self, path):
        with open(path, "w") as f:
            f.write("---\nlicense")
        raise KeyboardInterrupt

    monkeypatch.setattr(tu.cards.ModelCard, "save", cut_off)
    with pytest.raises(KeyboardInterrupt):
        tu.write_model_card(str(tmp_path), "t", "body", None, ["x"])
    assert not (tmp_path / "README.md").exists()
    monkeypatch.undo()
    tu.write_model_card(str(tmp_path), "t", "body", None, ["x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # the cut-off write's temporary file replaced
    assert "# t" in (tmp_path / "README.md").read_text()


class _SavingAccelerator:
    """Just what `tu.save_checkpoint` uses of an `Accelerator`: `save_state` writes one file, or is cut off."""

    is_main_process, cut_off = True, False

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        os.makedirs(path)
        (Path(path) / "model.safetensors").write_text("half" if self.cut_off else "whole")
        if self.cut_off:
            raise KeyboardInterrupt


def test_a_checkpoint_cut_off_keeps_the_previous_one_under_checkpoints_total_limit(tmp_path, monkeypatch):
    accelerator = _SavingAccelerator()
    tu.save_checkpoint(accelerator, str(tmp_path), 2, total_limit=1)
    accelerator.cut_off = True  # killed while saving step 4: checkpoint-2 must survive for `latest`
    with pytest.raises(KeyboardInterrupt):
        tu.save_checkpoint(accelerator, str(tmp_path), 4, total_limit=1)
    assert tu.resolve_resume_checkpoint(str(tmp_path), "latest") == str(tmp_path / "checkpoint-2")
    accelerator.cut_off = False
    tu.save_checkpoint(accelerator, str(tmp_path), 4, total_limit=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]  # pruned, no temporary folder left
    # killed while deleting checkpoint-4: no half checkpoint-4 is left for `latest` to pick up
    tu.save_checkpoint(accelerator, str(tmp_path), 6, total_limit=2)
    rmtree = shutil.rmtree

    def cut_off_rmtree(path, *args, **kwargs):
        if ".tmp-checkpoint-6" not in str(path) and Path(path).exists():
            os.remove(Path(path) / "model.safetensors")
            raise KeyboardInterrupt
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(tu.checkpoints.shutil, "rmtree", cut_off_rmtree)
    with pytest.raises(KeyboardInterrupt):
        tu.save_checkpoint(accelerator, str(tmp_path), 8, total_limit=2)
    monkeypatch.undo()
    assert [step for step, _ in tu.list_checkpoints(str(tmp_path))] == [6, 8]
    assert (tmp_path / "checkpoint-8" / "model.safetensors").read_text() == "whole"


def test_a_run_killed_during_its_final_save_is_not_taken_for_finished(tmp_path, monkeypatch):
    # a finished 2-step run trained on to step 4, killed while writing vae/: the card of step 2 must not mark the
    # folder as finished, so that the command started again writes the final outputs of step 4
    out = tmp_path / "vae"
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, *TINY_VAE, "--checkpointing_steps", 2]
    argv += ["--num_validation_images", 4, "--max_train_samples", 20, "--resume_from_checkpoint", "latest"]
    run(train_vae, [*argv, "--max_train_steps", 2])
    save_pretrained = SmallVAE.save_pretrained

    def cut_off(self, path, *args, **kwargs):
        if Path(path) == out / "vae":
            (out / "vae" / "config.json").write_text("{")
            raise KeyboardInterrupt
        save_pretrained(self, path, *args, **kwargs)

    monkeypatch.setattr(SmallVAE, "save_pretrained", cut_off)
    with pytest.raises(KeyboardInterrupt):
        run(train_vae, [*argv, "--max_train_steps", 4])
    monkeypatch.undo()
    assert not (out / "README.md").exists()
    run(train_vae, [*argv, "--max_train_steps", 4])
    assert "Steps: 4 " in (out / "README.md").read_text()
    assert_same_weights(weights(out / "checkpoint-4" / "vae"), weights(out / "vae"))


def test_validation_grids_are_never_left_half_written(tmp_path, monkeypatch):
    def cut_off(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89PNG")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", cut_off)
    images = [Image.new("RGB", (4, 4))] * 2
    with pytest.raises(KeyboardInterrupt):
        tu.save_validation_grid(mock.Mock(trackers=[]), images, 1, str(tmp_path), 2, "samples")
    assert not list((tmp_path / "validation").iterdir())  # neither the grid nor its temporary file
    monkeypatch.undo()
    path = tu.save_validation_grid(mock.Mock(trackers=[]), images, 1, str(tmp_path), 2, "samples")
    assert Image.open(path).size == (8, 4)
    assert sorted(p.name for p in (tmp_path / "validation").iterdir()) == ["samples-000002.png"]


def test_card_reports_the_total_batch_size():
    args = train_vae.parse_args(["--dataset_name", FACES, "--train_batch_size", "4"])
    args.gradient_accumulation_steps = 3
    body = tu.training_card_body("i", "u", args, 7, "1 min", "cpu", {}, None, num_processes=2)
    assert "Steps: 7 at a total batch size of 24 (4 per process x 2 process(es) x 3 gradient accumulation" in body


@pytest.mark.parametrize(
    "script, extra, message",
    [
        (train_unet, ["--max_train_steps", "0"], "--max_train_steps must be >= 1"),
        (train_clip, ["--num_train_epochs", "0"], "--num_train_epochs must be >= 1"),
        (train_vae, ["--resolution", "0"], "--resolution must be >= 1"),
        (train_unet, ["--snr_gamma", "-1"], "--snr_gamma must be > 0"),
        (train_unet, ["--snr_gamma", "0"], r"--snr_gamma must be > 0 \(5.0 recommended\) or left out, got 0.0"),
        (train_vae, ["--lr_num_cycles", "0"], "--lr_num_cycles must be >= 1"),
        (train_vae, ["--learning_rate", "0"], "--learning_rate must be > 0"),
        (train_unet, ["--lr_warmup_steps", "-1"], "--lr_warmup_steps must be >= 0"),
        (train_vae, ["--num_validation_images", "0"], "--num_validation_images must be >= 1"),
        (train_clip, ["--num_validation_images", "1"], "--num_validation_images must be >= 2"),
        (train_vae, ["--train_data_dir", "images"], "either --dataset_name or --train_data_dir, not both"),
        (train_unet, ["--mixed_precision", "fp16"], "fp16 has no fast path on CPU.*--mixed_precision bf16"),
        (train_vae, ["--kl_weight", "-0.5"], r"--kl_weight must be >= 0 and finite, got -0.5"),
        (train_unet, ["--max_train_samples", "0"], r"--max_train_samples must be >= 1 \(or left out"),
        (train_clip, ["--dataloader_num_workers", "-1"], r"--dataloader_num_workers must be >= 0"),
        (train_vae, ["--vae_config", "missing.json"], "--vae_config missing.json: cannot read a JSON config"),
        (train_vae, ["--vae_config", TINY_UNET], "--vae_config .*tiny.json is not a SmallVAE config: unknown keys"),
        # values torch / numpy / EMAModel took silently or refused late without naming the flag
        (train_vae, ["--max_grad_norm", "-1"], r"--max_grad_norm must be > 0 \(inf: no clipping\), got -1.0"),
        (train_unet, ["--max_grad_norm", "0"], "--max_grad_norm must be > 0"),
        (train_clip, ["--max_grad_norm", "nan"], "--max_grad_norm must be > 0"),
        (train_unet, ["--adam_beta1", "1"], r"--adam_beta1 must be in \[0, 1\), got 1.0"),
        (train_vae, ["--adam_beta2", "-0.1"], r"--adam_beta2 must be in \[0, 1\)"),
        (train_clip, ["--adam_epsilon", "-1"], "--adam_epsilon must be >= 0"),
        (train_vae, ["--adam_weight_decay", "-0.01"], "--adam_weight_decay must be >= 0"),
        (train_unet, ["--ema_decay", "-0.5"], r"--ema_decay must be in \[0, 1\], got -0.5"),
        (train_vae, ["--ema_decay", "1.5"], r"--ema_decay must be in \[0, 1\]"),
        (train_unet, ["--seed", "-1"], r"--seed must be in \[0, 2\*\*32 - 1\], got -1"),
        (train_clip, ["--seed", str(2**32)], r"--seed must be in \[0, 2\*\*32 - 1\]"),
        (train_vae, ["--dataloader_num_workers", "-1"], "--dataloader_num_workers must be >= 0"),
        (train_vae, ["--lr_scheduler", "polynomial", "--lr_power", "-1"], "--lr_power must be >= 0, got -1.0"),
        (train_unet, ["--input_perturbation", "-0.1"], "--input_perturbation must be >= 0"),
        # inf / nan that trained on silently to nan weights
        (train_vae, ["--learning_rate", "inf"], "--learning_rate must be > 0 and finite, got inf"),
        (train_unet, ["--text_encoder_lr", "inf"], "--text_encoder_lr must be positive and finite, got inf"),
        (train_unet, ["--noise_offset", "nan"], r"--noise_offset must be finite \(e.g. 0.05\), got nan"),
        (train_unet, ["--input_perturbation", "inf"], "--input_perturbation must be >= 0 and finite"),
        (train_vae, ["--kl_weight", "inf"], "--kl_weight must be >= 0 and finite, got inf"),
        (train_clip, ["--train_batch_size", "1"], "--train_batch_size must be >= 2 for the contrastive loss"),
        # diffusers refuses the token with wandb (it would log it); a list of trackers holding wandb too
        (train_vae, ["--report_to", "wandb", "--hub_token", "x"], "--report_to=wandb with --hub_token"),
        (train_unet, ["--report_to", "tensorboard,wandb", "--hub_token", "x"], "--report_to=wandb with --hub_token"),
    ],
)
def test_bad_flags_are_refused_before_any_work(script, extra, message, monkeypatch):
    monkeypatch.setattr(tu.flags, "_cpu_only", lambda: True)
    with pytest.raises(ValueError, match=message):
        script.parse_args(["--dataset_name", FACES, "--output_dir", "x", *extra])


@pytest.mark.parametrize("script", [train_vae, train_unet, train_clip])
@pytest.mark.parametrize("below", ["", "run"])
def test_an_output_dir_under_a_file_is_refused_before_any_work(script, below, tmp_path):
    # the scripts crashed with NotADirectoryError at their first checkpoint, after the data and the training
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="--output_dir .*a_file.* cannot be a folder: .*a_file' is a file"):
        script.parse_args(["--dataset_name", FACES, "--output_dir", str(tmp_path / "a_file" / below)])


@pytest.mark.parametrize("script", [train_vae, train_unet, train_clip], ids=lambda m: m.__name__)
def test_an_output_dir_inside_the_data_dir_is_refused(script, tmp_path):
    """Its validation grids became training images when the run was resumed (6 -> 7 images), as in diffusers."""
    (tmp_path / "data").mkdir()
    for output_dir in ("data/out", "data", "data/../data/x"):
        with pytest.raises(ValueError, match="--output_dir .* lies inside --train_data_dir"):
            script.parse_args(["--train_data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / output_dir)])
    script.parse_args(["--train_data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "data-out")])


@pytest.mark.parametrize("script", [train_unet, train_clip])
@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("text_encoder", "hidden_sise", 16, r"unknown text_encoder keys \['hidden_sise'\]"),  # CLIPTextConfig kept it
        ("tokenizer", "vocab_sise", 16, r"unknown tokenizer keys \['vocab_sise'\]; allowed: \['min_frequency'"),
        ("text_encoders", "hidden_size", 16, r"unknown sections \['text_encoders'\]"),  # train_clip used defaults
        ("text_encoder", "projection_dim", 0, "`projection_dim` must be at least 1, got 0"),  # CLIP trained to the end
        ("text_encoder", "hidden_size", 0, "`hidden_size` must be at least 1, got 0"),  # failed after the data
        ("text_encoder", "num_hidden_layers", 1.5, "`num_hidden_layers` must be an integer, got 1.5"),
        ("text_encoder", "hidden_act", "nope", r"`hidden_act` must be one of \[.*'gelu'.*\], got 'nope'"),
        ("text_encoder", "vocab_size", 600, r"text_encoder keys \['vocab_size'\] come from the trained tokenizer"),
        ("tokenizer", "vocab_size", 100, "`vocab_size` must be at least 514"),
        ("tokenizer", "model_max_length", 1, "`model_max_length` must be at least 2"),
        ("tokenizer", "min_frequency", "2", "`min_frequency` must be an integer, got '2'"),
    ],
)
def test_a_config_typo_or_bad_text_value_is_named_before_the_data(script, section, key, value, message, tmp_path):
    config = json.loads(Path(TINY_UNET).read_text())
    config.setdefault(section, {})[key] = value
    (tmp_path / "bad.json").write_text(json.dumps(config))
    flag = "--config" if script is train_clip else "--unet_config"
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / "o", flag, tmp_path / "bad.json"]
    with mock.patch.object(tu, "load_train_dataset") as load:
        with pytest.raises(ValueError, match=f"{flag} .*bad.json: {message}"):
            run(script, argv)
    load.assert_not_called()


@pytest.mark.parametrize(
    "section, key, message",
    [
        ("unet", "block_out_channel", r"unknown unet keys \['block_out_channel'\]; allowed: .*'block_out_channels'"),
        # diffusers ignored it with a log line: trained epsilon, and wrote the typo into the saved scheduler config
        ("scheduler", "prediction_typ", r"unknown scheduler keys \['prediction_typ'\]"),
    ],
)
def test_a_unet_or_scheduler_config_typo_is_named_before_the_data(section, key, message, tmp_path):
    config = json.loads(Path(TINY_UNET).read_text())
    config.setdefault(section, {})[key] = "v_prediction" if section == "scheduler" else [16, 32]
    config["scheduler"]["solver_order"] = 2  # a key of the pipeline's DPM-Solver++ only: allowed
    (tmp_path / "typo.json").write_text(json.dumps(config))
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / "o", "--unet_config", tmp_path / "typo.json"]
    with mock.patch.object(tu, "load_train_dataset") as load:
        with pytest.raises(ValueError, match=f"--unet_config .*typo.json: {message}"):
            run(train_unet, argv)
        (tmp_path / "bad.json").write_text('{"unet": {"block_out_channels": [16, 32],}}')
        for path, reason in ((tmp_path / "missing.json", "No such file"), (tmp_path / "bad.json", "Expecting")):
            argv[-1] = path
            with pytest.raises(ValueError, match=f"--unet_config .*{path.name}: cannot be read as JSON .*{reason}"):
                run(train_unet, argv)
    load.assert_not_called()


def test_a_missing_pretrained_text_encoder_folder_is_named(tmp_path):
    SmallVAE(block_out_channels=(8, 16), norm_num_groups=8).save_pretrained(tmp_path / "vae-run" / "vae")
    (tmp_path / "vae-run" / "README.md").write_text("a VAE run")
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / "o", "--unet_config", TINY_UNET]
    with mock.patch.object(tu, "load_train_dataset") as load:
        with pytest.raises(ValueError, match="--pretrained_text_encoder .*missing-clip: no such folder"):
            run(train_unet, [*argv, "--pretrained_text_encoder", tmp_path / "missing-clip"])
        # a folder without a tokenizer (a VAE run): named before the data ("No CLIP vocabulary found", after it)
        with pytest.raises(
            ValueError, match="--pretrained_text_encoder .*vae-run: no CLIP tokenizer and text encoder"
        ):
            run(train_unet, [*argv, "--pretrained_text_encoder", tmp_path / "vae-run"])
    load.assert_not_called()


def test_help_says_how_to_run_several_processes_on_cpu():
    for script in (train_vae, train_unet, train_clip):
        doc = " ".join(script.__doc__.split())
        assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2" in doc, script.__name__
        assert "accelerate launch --num_processes N" in doc


@pytest.mark.parametrize("flag", ["--num_epochs", "--train_batch_size"])
def test_train_classifier_refuses_zero(flag):
    with pytest.raises(ValueError, match=f"{flag} must be >= 1, got 0"):
        train_classifier.parse_args(["--output_dir", "x", flag, "0"])
    assert train_classifier.parse_args(["--output_dir", "x"]).num_epochs is None  # the task's default


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--learning_rate", "inf"], "--learning_rate must be a finite number > 0, got inf"),
        (["--weight_decay", "-0.1"], "--weight_decay must be a finite number >= 0, got -0.1"),
        (["--weight_decay", "nan"], "--weight_decay must be a finite number >= 0, got nan"),
    ],
)
def test_train_classifier_refuses_rates_that_cannot_train(extra, message):
    with pytest.raises(ValueError, match=message):
        train_classifier.parse_args(["--output_dir", "x", *extra])


def test_train_classifier_refuses_a_file_as_output_dir_before_training(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="--output_dir .*a_file' cannot be a folder: .*a_file' is a file"):
        train_classifier.parse_args(["--output_dir", str(tmp_path / "a_file")])


def test_train_classifier_never_leaves_a_half_written_output_dir(tmp_path, monkeypatch):
    from sdscratch.evaluation.classifier import AttributeClassifier
    from sdscratch.evaluation.references import classifier_labels

    model = AttributeClassifier(
        labels=classifier_labels("digits"), in_channels=1, sample_size=16, block_out_channels=(8, 8)
    )
    out = tmp_path / "weights"
    train_classifier.save(model, {"task": "digits"}, str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["config.json", "diffusion_pytorch_model.safetensors", "training_metrics.json"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_classifier.json, "dump", interrupted)  # killed after the weights were written
    torch.nn.init.ones_(next(model.parameters()))
    with pytest.raises(KeyboardInterrupt):
        train_classifier.save(model, {"task": "digits"}, str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous classifier, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]  # no leftover


# ---- fixes: tracker packages, EMA / parameter groups on resume, logged loss, crops, LR schedule flags ----
@pytest.mark.parametrize("tracker", ["wandb", "mlflow", "comet_ml", "tensorboard"])
def test_a_tracker_that_is_not_installed_is_refused_before_any_work(tracker, monkeypatch):
    missing = {tracker, "tensorboardX"}
    find_spec = tu.flags.importlib.util.find_spec
    monkeypatch.setattr(
        tu.flags.importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name)
    )
    base = ["--dataset_name", FACES, "--output_dir", "x"]
    for script in (train_vae, train_unet, train_clip):
        with pytest.raises(ImportError, match=f"Make sure to install {tracker}( or tensorboardX)? if you want to use"):
            script.parse_args([*base, "--report_to", tracker])
        for other in ("all", "none"):  # all: whatever is installed
            script.parse_args([*base, "--report_to", other])
    missing = {"tensorboard"}  # tensorboardX alone is enough for accelerate's tensorboard tracker
    monkeypatch.setattr(tu.flags.importlib.util, "find_spec", lambda name, *a: None if name in missing else object())
    train_vae.parse_args([*base, "--report_to", "tensorboard"])


@pytest.mark.parametrize("script", [train_vae, train_unet, train_clip], ids=lambda m: m.__name__)
def test_use_ema_with_a_checkpoint_written_without_ema_is_refused_before_any_work(script, tmp_path):
    out = tmp_path / "o"
    folders = {train_vae: ["vae"], train_unet: ["unet", "unet_ema", "text_encoder"], train_clip: ["clip"]}[script]
    for folder in folders:
        (out / "checkpoint-2" / folder).mkdir(parents=True)
    if script is train_unet:  # the UNet's EMA only
        (out / "checkpoint-2" / "unet_ema" / "ema_state.json").write_text("{}")
    missing = {train_vae: "vae_ema", train_unet: "text_encoder_ema", train_clip: "clip_ema"}[script]
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--use_ema", "--resume_from_checkpoint", "latest"]
    with mock.patch.object(tu, "load_train_dataset") as load:
        with pytest.raises(ValueError, match=f"--use_ema: the checkpoint .*checkpoint-2 holds no {missing}/"):
            run(script, argv)
    load.assert_not_called()


def test_resuming_with_another_text_encoder_lr_choice_names_the_flags(unet_dir, vae_dir, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(unet_dir / "checkpoint-2", out / "checkpoint-2")  # written with --text_encoder_lr 4e-3
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 3, "--use_ema"]
    argv += ["--pretrained_vae_model_name_or_path", vae_dir, "--unet_config", TINY_UNET]
    argv += ["--resume_from_checkpoint", "latest"]
    with pytest.raises(ValueError, match=r"checkpoint-2 was written with --text_encoder_lr / --text_encoder_freeze_"):
        run(train_unet, argv)


def test_resuming_with_another_text_encoder_choice_names_the_flags_before_any_work(unet_dir, tmp_path):
    # a from-scratch run's checkpoint resumed with a frozen --pretrained_text_encoder (e.g. recipes/cartoon-faces.sh
    # run with CLIP=1 after the default run, same --output_dir) failed in the optimizer's state after the data and
    # the latents, with torch's bare "parameter group that doesn't match the size of optimizer's group"; fine-tuned,
    # it trained on with the pretrained tokenizer's ids instead of the checkpoint's
    out = tmp_path / "o"
    shutil.copytree(unet_dir / "checkpoint-2", out / "checkpoint-2")  # text encoder trained from scratch
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--resume_from_checkpoint", "latest"]
    argv += ["--pretrained_text_encoder", unet_dir]
    with mock.patch.object(tu, "load_train_dataset") as load:
        for extra, now in (([], "frozen"), (["--train_text_encoder"], "fine-tuned")):
            with pytest.raises(ValueError, match=rf"was written by a run whose text encoder was trained from scratch "
                                                 rf"\(no --pretrained_text_encoder\); this run's is {now} "):  # fmt: skip
                run(train_unet, argv + extra)
    load.assert_not_called()
    checkpoint, scratch, frozen = out / "checkpoint-2", [], ["--pretrained_text_encoder", "x"]
    fine_tuned = frozen + ["--train_text_encoder"]
    # a fine-tuned run's checkpoint holds no tokenizer/ (from scratch: left to build_or_resume_tokenizer, which names
    # the missing folder), a frozen run's no text_encoder/ either
    for removed, resumes in ((None, [scratch]), ("tokenizer", [fine_tuned, scratch]), ("text_encoder", [frozen])):
        if removed:
            shutil.rmtree(checkpoint / removed)
        for flags in (scratch, fine_tuned, frozen):
            args = train_unet.parse_args(["--dataset_name", FACES, *flags])
            if flags in resumes:
                tu.check_resume_text_encoder(args, str(checkpoint))
                continue
            with pytest.raises(ValueError, match="Resume with the text-encoder flags of the run that wrote"):
                tu.check_resume_text_encoder(args, str(checkpoint))


@pytest.mark.parametrize(
    "script, accumulation",
    [(train_vae, 2), (train_unet, 2), (train_clip, 2), (train_unet, 1)],
    ids=["vae-2", "unet-2", "clip-2", "unet-1"],
)
def test_the_logged_loss_is_the_mean_over_accumulated_micro_batches(script, accumulation, vae_dir, tmp_path):
    losses, logged = [], []
    backward, log = Accelerator.backward, Accelerator.log

    def record_backward(self, loss, **kwargs):
        losses.append(loss.item())
        return backward(self, loss, **kwargs)

    def record_log(self, values, step=None, **kwargs):
        if "loss" in values:
            logged.append(values["loss"])
        return log(self, values, step=step, **kwargs)

    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / "o", "--max_train_steps", 2]
    argv += ["--gradient_accumulation_steps", accumulation]
    argv += {
        train_vae: [*TINY_VAE, "--num_validation_images", 4],
        train_unet: ["--unet_config", TINY_UNET, "--pretrained_vae_model_name_or_path", vae_dir]
        + ["--validation_prompts", "Cartoon face"],
        train_clip: ["--config", TINY_UNET, "--vision_patch_size", 16, "--vision_num_hidden_layers", 1]
        + ["--vision_head_dim", 16, "--num_validation_images", 4],
    }[script]
    with (
        mock.patch.object(Accelerator, "backward", record_backward),
        mock.patch.object(Accelerator, "log", record_log),
    ):
        run(script, argv)
    assert len(losses) == 2 * accumulation and len(logged) == 2
    if accumulation == 1:  # exactly the numbers logged before
        assert logged == losses
    else:
        assert logged == pytest.approx([sum(losses[:2]) / 2, sum(losses[2:]) / 2], rel=1e-6)
        assert logged[0] not in losses[:2]


def test_train_clip_passes_dataloader_num_workers(tmp_path):
    seen = {}

    class Stop(Exception):
        pass

    def data_loader(dataset, **kwargs):
        seen.update(kwargs)
        raise Stop

    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / "o", "--config", TINY_UNET]
    argv += ["--vision_patch_size", 16, "--vision_head_dim", 16, "--num_validation_images", 4]
    argv += ["--dataloader_num_workers", 3]
    with mock.patch.object(torch.utils.data, "DataLoader", data_loader), pytest.raises(Stop):
        run(train_clip, argv)
    assert seen["num_workers"] == 3


def write_sized_imagefolder(folder: Path, size: tuple, num_images: int = 8) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w") as f:
        for i in range(num_images):
            Image.new("RGB", size, (30 * i, 100, 200)).save(folder / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": f"Cartoon face {i % 2}"}) + "\n")
    return folder


@pytest.mark.parametrize("size", [(80, 64), (64, 64)], ids=["non-square", "square"])
def test_cached_latents_warn_when_random_crops_are_fixed(size, vae_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    folder = write_sized_imagefolder(tmp_path / "images", size)
    argv = [*COMMON, "--train_data_dir", folder, "--output_dir", tmp_path / "o", "--unet_config", TINY_UNET]
    argv += ["--pretrained_vae_model_name_or_path", vae_dir, "--max_train_steps", 1, "--random_flip"]
    argv += ["--validation_prompts", "Cartoon face 0"]
    run(train_unet, argv)
    warned = "8 of 8 images are not square after the resize to --resolution 64 and get a random crop" in caplog.text
    assert warned == (size != (64, 64))
    if warned:
        assert "--center_crop, or --no-cache_latents for a fresh random crop" in caplog.text
        assert "the flipped copy is another random window" in caplog.text


def test_random_crop_watch_counts_the_images_train_clip_crops_once(caplog):
    transform = tu.image_transform(train_clip.parse_args(["--dataset_name", FACES]))
    images = [Image.new("RGB", (96, 64)), Image.new("RGB", (128, 128)), Image.new("RGB", (64, 70))]
    watch = tu.RandomCropWatch(transform, 64, center_crop=False)
    assert [tuple(watch(image).shape) for image in images] == [(3, 64, 64)] * 3 and watch.random_crops == 2
    with caplog.at_level(logging.WARNING):
        watch.warn(3, "train_clip.py decodes every image once", "--center_crop")
    assert "2 of 3 images are not square" in caplog.text and "fixed for the whole run" in caplog.text
    centred = tu.RandomCropWatch(transform, 64, center_crop=True)
    centred(images[0])
    assert centred.random_crops == 0


def test_lr_num_cycles_and_lr_power_reach_the_schedule():
    def lrs(*flags):
        args = train_vae.parse_args(["--dataset_name", FACES, "--max_train_steps", "10", *flags])
        parameter = torch.nn.Parameter(torch.zeros(2))
        optimizer, scheduler = tu.make_optimizer_and_scheduler(args, [parameter], mock.Mock(num_processes=1), 10)
        seen = []
        for _ in range(10):
            seen.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return seen

    cosine = lrs("--lr_scheduler", "cosine")
    assert lrs("--lr_scheduler", "cosine_with_restarts") == cosine  # one cycle: the same schedule
    restarts = lrs("--lr_scheduler", "cosine_with_restarts", "--lr_num_cycles", "2")
    assert restarts != cosine and restarts[5] == pytest.approx(restarts[0])  # the second cycle starts again
    assert lrs("--lr_scheduler", "polynomial", "--lr_power", "2.0") != lrs("--lr_scheduler", "polynomial")


def test_a_grayscale_vae_config_trains_on_one_channel_images(tmp_path):
    config = tmp_path / "gray.json"
    config.write_text(json.dumps({"in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16]}))
    out = tmp_path / "o"
    run(train_vae, [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 1, "--resolution", 32,
                    "--num_validation_images", 4, "--vae_config", config])  # fmt: skip
    assert SmallVAE.from_pretrained(out / "vae").config.in_channels == 1
    config.write_text(json.dumps({"in_channels": 1}))
    with pytest.raises(ValueError, match="out_channels 3 must equal in_channels 1"):
        train_vae.parse_args(["--dataset_name", FACES, "--vae_config", str(config)])


# ---- flags as diffusers' training scripts take them ----
def test_flags_at_their_limits_are_taken(monkeypatch):
    base = ["--dataset_name", FACES, "--output_dir", "x"]
    args = train_vae.parse_args([*base, "--max_grad_norm", "inf", "--ema_decay", "1", "--seed", str(2**32 - 1)])
    assert args.max_grad_norm == float("inf") and args.seed == 2**32 - 1
    train_unet.parse_args([*base, "--adam_beta1", "0", "--adam_epsilon", "0", "--adam_weight_decay", "0"])
    train_vae.parse_args([*base, "--lr_scheduler", "polynomial", "--lr_power", "0"])
    for process_index in (1, 2):  # seed + process index wraps below numpy's 2**32
        tu.seed_each_process(mock.Mock(process_index=process_index), 2**32 - 1)
    assert torch.initial_seed() == 1


def test_min_snr_weights_are_diffusers_and_stay_finite_at_zero_terminal_snr():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    timesteps = torch.arange(1000)
    for zero_snr in (False, True):
        scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                  rescale_betas_zero_snr=zero_snr)  # fmt: skip
        snr = compute_snr(scheduler, timesteps)
        for prediction_type in ("epsilon", "v_prediction"):
            weights = tu.min_snr_weights(snr, 5.0, prediction_type)
            # diffusers' train_text_to_image.py, verbatim
            diffusers_weights = torch.stack([snr, 5.0 * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
            diffusers_weights = diffusers_weights / (snr if prediction_type == "epsilon" else snr + 1)
            assert torch.isfinite(weights).all(), (zero_snr, prediction_type)
            if zero_snr and prediction_type == "epsilon":  # SNR(T) = 0: diffusers' 0 / 0, the limit here
                assert snr[-1] == 0 and diffusers_weights[-1].isnan() and weights[-1] == 1
                weights, diffusers_weights = weights[:-1], diffusers_weights[:-1]
            assert torch.equal(weights, diffusers_weights)


def test_a_prediction_type_the_loop_does_not_train_is_refused_before_the_data(tmp_path):
    config = json.loads(Path(TINY_UNET).read_text())
    config["scheduler"]["prediction_type"] = "sample"  # was trained on v, and saved as "sample"
    (tmp_path / "sample.json").write_text(json.dumps(config))
    argv = [
        *COMMON,
        "--dataset_name",
        FACES,
        "--output_dir",
        tmp_path / "o",
        "--unet_config",
        tmp_path / "sample.json",
    ]
    with mock.patch.object(tu, "load_train_dataset") as load:
        with pytest.raises(ValueError, match="prediction_type 'sample' is not trained by train_unet.py; use one of"):
            run(train_unet, argv)
        run_args = train_unet.parse_args([str(a) for a in argv] + ["--prediction_type", "v_prediction"])
        assert tu.load_config(run_args)["scheduler"]["prediction_type"] == "v_prediction"  # the flag wins
    load.assert_not_called()


def test_fewer_training_timesteps_than_sampling_steps_validate_and_save(tmp_path):
    # the validation took 20 DPM-Solver steps: a 15-timestep model's grid was nan (black), a 10-timestep run crashed
    # with an IndexError after training, before saving; the card's snippet asked for 25 steps
    out = tmp_path / "o"
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--resolution", 16, "--unet_config", TINY_UNET]
    run(
        train_unet,
        argv + ["--max_train_steps", 1, "--num_train_timesteps", 10, "--validation_prompts", "Cartoon face"],
    )
    assert np.asarray(Image.open(out / "validation" / "samples-000001.png")).max() > 0
    assert "num_inference_steps=10," in (out / "README.md").read_text()
    assert CartoonFacePipeline.from_pretrained(out).scheduler.config.num_train_timesteps == 10
    with mock.patch.object(tu, "load_train_dataset") as load:
        for value, flag in ((0, "--num_train_timesteps"), (-5, "--num_train_timesteps")):
            with pytest.raises(ValueError, match=f"{flag} must be an integer >= 1, got {value}"):
                run(train_unet, argv + ["--output_dir", tmp_path / "e", "--num_train_timesteps", value])
    load.assert_not_called()


def test_input_perturbation_noises_the_input_more_than_the_target_says(tmp_path):
    from diffusers import DDPMScheduler

    def noises(*flags):
        add_noise = DDPMScheduler.add_noise
        with mock.patch.object(DDPMScheduler, "add_noise", autospec=True, side_effect=add_noise) as spy:
            with mock.patch.object(train_unet.F, "mse_loss", wraps=train_unet.F.mse_loss) as loss:
                run(train_unet, [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / str(flags[-1]), "--resolution",
                                 32, "--unet_config", TINY_UNET, "--max_train_steps", 1, *flags])  # fmt: skip
        return spy.call_args_list[0].args[2], loss.call_args_list[0].args[1]  # add_noise's noise, the target

    model_input_noise, target = noises("--input_perturbation", 0)
    assert torch.equal(model_input_noise, target)
    model_input_noise, target = noises("--input_perturbation", 0.1)  # (8, 3, 32, 32): 24,576 draws
    assert (model_input_noise - target).std().item() == pytest.approx(0.1, rel=0.05)


def test_tracker_project_name_names_the_trackers_project(vae_dir, tmp_path):
    assert (vae_dir / "tb" / "train_vae").is_dir()  # the default: the script's name
    out = tmp_path / "o"
    run(train_vae, [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--max_train_steps", 1, "--resolution", 32,
                    *TINY_VAE, "--report_to", "tensorboard", "--tracker_project_name", "faces-vae"])  # fmt: skip
    assert [p.name for p in (out / "logs").iterdir()] == ["faces-vae"]


def test_report_to_takes_a_comma_separated_list():
    assert tu.report_to_trackers("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert tu.report_to_trackers("none") is None and tu.report_to_trackers("tensorboard,none") == ["tensorboard"]
    args = train_vae.parse_args(["--dataset_name", FACES, "--output_dir", "x", "--report_to", "tensorboard,none"])
    AcceleratorState._reset_state(True)
    assert [str(t) for t in tu.make_accelerator(args).log_with] == ["tensorboard"]  # accelerate refused the string


@pytest.mark.parametrize(
    "flags, ignored",
    [
        (["--lr_warmup_steps", "5"], "--lr_scheduler constant ignores --lr_warmup_steps 5 .*constant_with_warmup"),
        (["--lr_scheduler", "cosine", "--lr_num_cycles", "3"], "cosine ignores --lr_num_cycles 3"),
        (["--lr_scheduler", "linear", "--lr_power", "2"], "linear ignores --lr_power 2.0"),
        (["--lr_scheduler", "constant_with_warmup", "--lr_warmup_steps", "5"], None),
        (["--lr_warmup_steps", "5", "--text_encoder_freeze_steps", "2"], None),  # the text encoder's ramp
    ],
)
def test_schedule_flags_the_schedule_ignores_are_warned_about(flags, ignored, caplog):
    caplog.set_level(logging.WARNING)
    train_unet.parse_args(["--dataset_name", FACES, "--output_dir", "x", *flags])
    if ignored is None:
        assert "ignores" not in caplog.text
    else:
        assert re.search(ignored, caplog.text)


def test_a_new_run_in_an_output_dir_with_checkpoints_is_refused_before_any_work(tmp_path):
    # left alone, the new run's checkpoints would be pruned among the earlier run's, and `latest` would later resume
    # the earlier run's last one (diffusers mixes them so)
    for step in (4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path, *TINY_VAE]
    with mock.patch.object(tu, "load_train_dataset") as load:
        with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run \(checkpoint-4, checkpoint-6\)\. "
                                             "Continue it with --resume_from_checkpoint latest"):  # fmt: skip
            run(train_vae, argv)
    load.assert_not_called()
    assert tu.resolve_resume_checkpoint(str(tmp_path), "latest") == str(tmp_path / "checkpoint-6")
    assert tu.resolve_resume_checkpoint(str(tmp_path / "empty"), None) is None


@pytest.mark.filterwarnings("ignore:.*to a meta parameter")  # the model's load_state_dict onto meta: a no-op
def test_the_ema_lives_on_the_training_device_also_when_resumed(tmp_path):
    # accelerate moves only the models it prepares: an EMA left on the CPU beside a model on the GPU made
    # `ema.step` fail at the first optimizer step of every --use_ema run on a GPU (diffusers moves its EMA too)
    meta = torch.device("meta")  # stands in for a GPU on this CPU-only test machine
    vae = SmallVAE(block_out_channels=[8, 16], latent_channels=4, layers_per_block=1, norm_num_groups=4)
    ema = tu.make_ema(vae, 0.99, meta)
    assert {p.device for p in ema.shadow_params} == {meta}
    assert {p.device for p in vae.parameters()} == {torch.device("cpu")}  # the model stays for prepare() to move
    tu._save_ema(tu.make_ema(vae, 0.99), vae, str(tmp_path / "vae_ema"))  # a checkpoint's EMA folder
    vae.save_pretrained(tmp_path / "vae")
    accelerator = mock.Mock()
    tu.register_checkpoint_hooks(accelerator, {"vae": vae.to(meta)}, {"vae": ema})  # resumed once prepared
    load_hook = accelerator.register_load_state_pre_hook.call_args.args[0]
    load_hook([], str(tmp_path))
    assert {p.device for p in ema.shadow_params} == {meta}  # read on the CPU, then put beside the model
    ema.step(vae.parameters())  # the EMA update of a training step: on one device


def test_card_names_an_apple_gpu_as_the_hardware_not_the_cpu():
    """On Apple silicon accelerate trains on "mps" (its GPU) unless told otherwise: the card said "1 x CPU (arm, 8
    threads per process)" for a run that did not use the CPU's threads."""
    from types import SimpleNamespace

    accelerator = SimpleNamespace(device=torch.device("mps"), num_processes=1, mixed_precision="bf16")
    assert tu.describe_hardware(accelerator).startswith("1 x MPS (")
    assert tu.describe_hardware(accelerator).endswith(", mixed precision bf16")


# ---- the training steps against hand-computed references (a mutation audit found them unpinned) ----
def record_unet_steps(out, *flags):
    """Runs train_unet.py (tiny UNet, 40 faces, batch 8) and records every micro-batch's forward diffusion
    (`add_noise`'s x_0, noise, t), regression (`mse_loss`'s prediction and target), loss (`backward`'s), latent
    cache draw and gradient clipping."""
    from diffusers import DDPMScheduler

    record = {"add_noise": [], "mse": [], "loss": [], "cache": [], "clip": []}
    add_noise, mse_loss, backward = DDPMScheduler.add_noise, train_unet.F.mse_loss, Accelerator.backward
    clip, sample_from_cache = Accelerator.clip_grad_norm_, tu.sample_from_cache

    def spy_add_noise(self, x_0, noise, timesteps):
        record["add_noise"].append((x_0, noise, timesteps))
        return add_noise(self, x_0, noise, timesteps)

    def spy_mse_loss(prediction, target, **kwargs):
        record["mse"].append((prediction.detach(), target))
        return mse_loss(prediction, target, **kwargs)

    def spy_backward(self, loss, **kwargs):
        record["loss"].append(loss.detach())
        return backward(self, loss, **kwargs)

    def spy_clip(self, parameters, max_norm, **kwargs):
        parameters = list(parameters)
        record["clip"].append((len(parameters), max_norm))
        return clip(self, parameters, max_norm, **kwargs)

    def spy_cache(*args):
        record["cache"].append(sample_from_cache(*args))
        return record["cache"][-1]

    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", out, "--unet_config", TINY_UNET, *flags]
    with (
        mock.patch.object(DDPMScheduler, "add_noise", spy_add_noise),
        mock.patch.object(train_unet.F, "mse_loss", spy_mse_loss),
        mock.patch.object(Accelerator, "backward", spy_backward),
        mock.patch.object(Accelerator, "clip_grad_norm_", spy_clip),
        mock.patch.object(tu, "sample_from_cache", spy_cache),
    ):
        run(train_unet, argv + ["--validation_prompts", "Cartoon face"])
    return record


def scaled_linear_alphas_cumprod(beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000):
    """alpha_bar_t of the tiny config's "scaled_linear" schedule, from its definition (DDPM eq. 4 notation)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def test_a_unet_step_noises_scaled_latents_at_every_timestep_with_per_channel_offset_noise(vae_dir, tmp_path):
    vae = SmallVAE.from_pretrained(vae_dir / "vae")
    vae.register_to_config(scaling_factor=0.25)  # far from 1, so that x_0 = scaling_factor * z is visible
    vae.save_pretrained(tmp_path / "vae")
    record = record_unet_steps(
        tmp_path / "o", "--pretrained_vae_model_name_or_path", tmp_path / "vae", "--max_train_steps", 2,
        "--num_train_timesteps", 4, "--noise_offset", 1.0,
    )  # fmt: skip
    (x_0, _, t_1), (_, noise, t_2) = record["add_noise"]
    # the UNet learns the VAE's latents times scaling_factor: the pipeline decodes latents / scaling_factor
    torch.testing.assert_close(x_0, 0.25 * record["cache"][0], rtol=0, atol=0)
    # t uniform over every training timestep 0 .. T - 1 (16 draws of 4 values)
    assert sorted(set(torch.cat([t_1, t_2]).tolist())) == [0, 1, 2, 3]
    # offset noise: N(0, I) plus one N(0, noise_offset^2) offset per image and channel (crosslabs' offset noise)
    channel_means = noise.mean(dim=(2, 3))  # (B, C)
    assert channel_means.std().item() > 0.5  # the offset: sd 1 over (B, C); without it sd 1 / 16
    assert (noise - channel_means[..., None, None]).std().item() == pytest.approx(1.0, rel=0.1)  # per pixel: N(0, 1)


def test_a_unet_step_regresses_onto_v_with_min_snr_weights(tmp_path):
    record = record_unet_steps(
        tmp_path / "o", "--resolution", 16, "--max_train_steps", 1, "--prediction_type", "v_prediction",
        "--snr_gamma", 1.0, "--input_perturbation", 0.1, "--max_grad_norm", 0.5,
    )  # fmt: skip
    ((x_0, input_noise, t),), ((prediction, target),) = record["add_noise"], record["mse"]
    (loss,) = record["loss"]
    alpha_bar = scaled_linear_alphas_cumprod()[t].float()[:, None, None, None]  # (B, 1, 1, 1)
    # v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022) of the unperturbed noise eps: the
    # input's noise is eps plus 0.1 x another N(0, I), the target's is eps
    eps = (target + (1 - alpha_bar).sqrt() * x_0) / alpha_bar.sqrt()
    assert (input_noise - eps).std().item() == pytest.approx(0.1, rel=0.1)
    # min-SNR-gamma on v: each sample's MSE weighted by min(SNR, gamma) / (SNR + 1), SNR = alpha_bar / (1 - alpha_bar)
    snr = (alpha_bar / (1 - alpha_bar)).flatten()
    expected = ((prediction - target) ** 2).mean(dim=(1, 2, 3)) * snr.clamp(max=1.0) / (snr + 1)
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-5, atol=0)
    # the gradient of every trained weight (UNet and text encoder) is clipped to --max_grad_norm
    pipe = CartoonFacePipeline.from_pretrained(tmp_path / "o")
    num_parameters = len(list(pipe.unet.parameters())) + len(list(pipe.text_encoder.parameters()))
    assert record["clip"] == [(num_parameters, 0.5)]


def test_captions_are_dropped_to_the_empty_caption_at_the_given_rate(tmp_path):
    from transformers import CLIPTextModel

    forward = CLIPTextModel.forward
    with mock.patch.object(CLIPTextModel, "forward", autospec=True, side_effect=forward) as spy:
        record_unet_steps(
            tmp_path / "o", "--resolution", 16, "--max_train_steps", 4, "--conditioning_dropout_prob", 0.25
        )
    input_ids = torch.cat([call.args[1] for call in spy.call_args_list[:4]])  # the 4 steps' (8, L), then validation
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "o" / "tokenizer")
    empty = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    dropped = (input_ids == empty).all(dim=1)
    assert 2 <= int(dropped.sum()) <= 14  # Binomial(32, 0.25): 8 expected; 1 - p = 0.75 would give 24
    assert not (input_ids[~dropped] == empty).all(dim=1).any()  # the others: their image's caption


def test_the_saved_models_are_the_ema_weights(unet_dir, vae_dir):
    # the final checkpoint (the last step) holds the EMA beside the raw weights; the output folder holds the EMA
    assert_same_weights(weights(unet_dir / "checkpoint-3" / "unet_ema"), weights(unet_dir / "unet"))
    text_encoder = [weights(unet_dir / folder, "model.safetensors") for folder in ("checkpoint-3/text_encoder_ema",
                                                                                  "text_encoder")]  # fmt: skip
    assert_same_weights(*text_encoder)
    assert_same_weights(weights(vae_dir / "checkpoint-4" / "vae_ema"), weights(vae_dir / "vae"))
    raw = weights(unet_dir / "checkpoint-3" / "unet")
    assert any(not torch.equal(raw[k], weights(unet_dir / "unet")[k]) for k in raw)  # EMA differs from the raw weights


def test_validation_leaves_the_training_untouched(tmp_path):
    """A validation grid samples with the EMA weights in eval mode: the raw weights, train mode and the random
    stream must come back as they were, so that a run trains the same with or without validations."""
    folder = write_noise_imagefolder(tmp_path / "images", (16, 16), 8)  # not built-in: no separation scores
    argv = [*COMMON, "--train_data_dir", folder, "--resolution", 16, "--unet_config", TINY_UNET]
    argv += [
        "--max_train_steps",
        2,
        "--train_batch_size",
        4,
        "--use_ema",
        "--ema_decay",
        0.9,
        "--num_train_timesteps",
        10,
    ]
    argv += ["--validation_prompts", "Cartoon face 0"]  # 10 sampling steps
    for steps in (1, 100):
        run(train_unet, argv + ["--output_dir", tmp_path / str(steps), "--validation_steps", steps])
    assert (tmp_path / "1" / "validation" / "samples-000001.png").is_file()
    for folder in ("checkpoint-2/unet", "checkpoint-2/unet_ema"):
        assert_same_weights(weights(tmp_path / "1" / folder), weights(tmp_path / "100" / folder))


def test_cached_latents_are_what_encoding_every_step_draws():
    """--cache_latents (the default) keeps each image's posterior mean and std (and its mirror's with
    --random_flip); a step's draw mean + std * eps must be the VAE's own posterior sample of the (flipped) image,
    as --no-cache_latents encodes it, for the same random stream."""
    import argparse

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]
    dataset = datasets.Dataset.from_dict({"image": images}).cast_column("image", datasets.Image())
    transform = tu.image_transform(argparse.Namespace(seed=0, resolution=16, center_crop=True))
    vae = SmallVAE(block_out_channels=[8, 16], latent_channels=4, layers_per_block=1, norm_num_groups=4).eval()
    cache = tu.build_latent_cache(vae, dataset, transform, 16, center_crop=True, random_flip=True)
    index, flip = torch.tensor([2, 0, 3, 2]), torch.tensor([True, False, False, False])
    torch.manual_seed(1)
    cached = tu.sample_from_cache(cache, index, flip)
    pixels = torch.stack([transform(dataset[int(i)]["image"]) for i in index])  # (4, 3, 16, 16)
    pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)  # the horizontal mirror
    torch.manual_seed(1)
    with torch.no_grad():
        encoded = vae.encode(pixels).latent_dist.sample()
    torch.testing.assert_close(cached, encoded, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(cached[0], cached[3], atol=1e-3)  # image 2 and its mirror


def test_a_run_resumed_mid_epoch_with_gradient_accumulation_matches_an_uninterrupted_run(tmp_path):
    # 24 images, batch 4, 2 micro-batches per step: 3 steps per epoch; resumed at step 1, the loader must skip the
    # 2 micro-batches that step 1 trained on, not 1
    argv = [*COMMON, "--dataset_name", "builtin:cartoon-faces?num_images=24", "--resolution", 16, "--unet_config"]
    argv += [TINY_UNET, "--train_batch_size", 4, "--gradient_accumulation_steps", 2, "--max_train_steps", 2]
    argv += ["--checkpointing_steps", 1, "--validation_prompts", "Cartoon face", "--num_train_timesteps", 10]
    full, resumed = run_then_resume_from_step_1(train_unet, argv, tmp_path)
    assert_same_weights(weights(full / "unet"), weights(resumed / "unet"))


def test_latest_is_the_highest_step_not_the_last_name(tmp_path):
    for step in (9, 100, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert [s for s, _ in tu.list_checkpoints(str(tmp_path))] == [9, 10, 100]
    assert tu.resolve_resume_checkpoint(str(tmp_path), "latest") == str(tmp_path / "checkpoint-100")


@pytest.mark.parametrize(
    "key, value",
    [("num_train_timesteps", 500), ("beta_end", 0.03), ("rescale_betas_zero_snr", True), ("beta_start", 0.001)],
)
def test_every_noise_schedule_key_is_compared_on_resume(tmp_path, key, value):
    from diffusers import DDPMScheduler

    DDPMScheduler().save_pretrained(tmp_path / "checkpoint-1" / "noise_scheduler")
    tu.check_checkpoints_compatible(str(tmp_path), {}, None, DDPMScheduler())  # the same schedule resumes
    with pytest.raises(ValueError, match=f"another noise schedule or target \\({key}: "):
        tu.check_checkpoints_compatible(str(tmp_path), {}, None, DDPMScheduler(**{key: value}))


def test_a_nested_config_difference_is_named_by_its_dotted_key(tmp_path):
    # a CLIP checkpoint of another text width printed both whole text_config dicts (40-odd keys each)
    from transformers import CLIPConfig, CLIPModel

    def clip(hidden_size):
        text = {"hidden_size": hidden_size, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
        vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))

    clip(16).save_pretrained(tmp_path / "checkpoint-1" / "clip")
    tu.check_checkpoints_compatible(str(tmp_path), {"clip": clip(16)})  # the same architecture resumes
    with pytest.raises(ValueError, match=r"clip config differs: text_config.hidden_size: 16 there vs 24 now\)"):
        tu.check_checkpoints_compatible(str(tmp_path), {"clip": clip(24)})


def test_the_cards_final_loss_is_the_mean_of_the_last_100_steps(tmp_path):
    clock = tu.TrainingClock()
    for step in range(150):
        clock.log_step(float(step), 10.0)
    assert clock.recent_loss() == pytest.approx(sum(range(50, 150)) / 100)
    (tmp_path / "checkpoint-150").mkdir()
    clock.save(str(tmp_path / "checkpoint-150"))
    resumed = tu.TrainingClock(str(tmp_path / "checkpoint-150"))
    resumed.log_step(150.0, 10.0)
    assert resumed.recent_loss() == pytest.approx(sum(range(51, 151)) / 100) and resumed.runs == 2


def test_the_lr_schedule_and_scale_lr_count_every_process():
    """accelerate's prepared scheduler steps once per process per optimizer step: warmup and decay must be
    stretched by the number of processes, so that 2 processes follow the 1-process schedule per optimizer step;
    --scale_lr multiplies by the total batch (per-process batch x accumulation x processes)."""

    def optimizer_step_lrs(num_processes, *flags):
        args = train_vae.parse_args(["--dataset_name", FACES, "--max_train_steps", "6", *flags])
        parameter = torch.nn.Parameter(torch.zeros(2))
        optimizer, scheduler = tu.make_optimizer_and_scheduler(
            args, [parameter], mock.Mock(num_processes=num_processes), 6
        )
        lrs = []
        for _ in range(6):
            lrs.append(scheduler.get_last_lr()[0])
            optimizer.step()
            for _ in range(num_processes):
                scheduler.step()
        return args, lrs

    linear = ["--lr_scheduler", "linear", "--lr_warmup_steps", "2", "--learning_rate", "1.0"]
    assert optimizer_step_lrs(1, *linear)[1] == pytest.approx([0, 0.5, 1, 0.75, 0.5, 0.25])  # diffusers' linear
    assert optimizer_step_lrs(2, *linear)[1] == pytest.approx(optimizer_step_lrs(1, *linear)[1])
    scaled = ["--scale_lr", "--learning_rate", "1e-4", "--train_batch_size", "4", "--gradient_accumulation_steps", "3"]
    assert optimizer_step_lrs(2, *scaled)[0].learning_rate == pytest.approx(1e-4 * 4 * 3 * 2)


def test_frozen_caption_embeddings_are_each_captions_in_order():
    captions = [f"a face number {i}" for i in range(300)]  # two chunks of 256
    tokenizer = build_tokenizer(captions, model_max_length=8, vocab_size=600)
    text_encoder = build_text_encoder(
        tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=16
    ).eval()
    ids = tu.tokenize_captions(tokenizer, captions)
    embeds = tu.embed_captions(text_encoder, ids, torch.device("cpu"))
    assert embeds.shape == (300, 8, 16)
    with torch.no_grad():
        for i in (0, 255, 256, 299):
            torch.testing.assert_close(embeds[i], text_encoder(ids[i : i + 1])[0][0], rtol=1e-5, atol=1e-6)


def test_random_crops_reach_every_window():
    columns = torch.arange(8.0)[None, None, None, :].expand(200, 1, 8, 8)  # pixel value = its column
    torch.manual_seed(0)
    # a 4x4 window of an 8x8 image starts at offsets 0 .. 4 on each axis, the last one included
    assert {int(crop[0, 0, 0]) for crop in train_vae.random_crops(columns, 4)} == {0, 1, 2, 3, 4}
    rows = columns.transpose(-1, -2).contiguous()  # pixel value = its row
    assert {int(crop[0, 0, 0]) for crop in train_vae.random_crops(rows, 4)} == {0, 1, 2, 3, 4}


def test_a_vae_step_decodes_a_posterior_sample_of_the_flipped_batch_and_adds_the_kl_per_pixel(tmp_path):
    record = {"batches": [], "steps": [], "loss": []}
    stack, forward, backward = tu.stack_pixel_values, train_vae.VAEWithPosterior.forward, Accelerator.backward
    training_images = tu.TrainingImages

    def spy_forward(self, pixel_values):
        state = torch.get_rng_state()
        reconstruction, kl = forward(self, pixel_values)
        after = torch.get_rng_state()
        torch.set_rng_state(state)  # the same draw again: z = mean + std * eps
        with torch.no_grad():
            posterior = self.vae.encode(pixel_values).latent_dist
            expected = self.vae.decode(posterior.sample()).sample
        torch.set_rng_state(after)
        record["steps"].append((pixel_values, reconstruction.detach(), expected, posterior.mean, posterior.logvar))
        return reconstruction, kl

    def spy_backward(self, loss, **kwargs):
        record["loss"].append(loss.detach())
        return backward(self, loss, **kwargs)

    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path / "o", "--max_train_steps", 1, "--resolution"]
    argv += [32, *TINY_VAE, "--num_validation_images", 4, "--random_flip", "--kl_weight", 0.5]
    with (
        mock.patch.object(tu, "stack_pixel_values", lambda rows: record["batches"].append(stack(rows)) or stack(rows)),
        mock.patch.object(tu, "TrainingImages", side_effect=training_images) as images,
        mock.patch.object(train_vae.VAEWithPosterior, "forward", spy_forward),
        mock.patch.object(Accelerator, "backward", spy_backward),
    ):
        run(train_vae, argv)
    assert len(images.call_args.args[0]) == 36  # 40 faces, the last 4 held out for the metrics and grids
    # the first step's batch (the loader may fetch the next one ahead)
    x, reconstruction, expected, mean, logvar = record["steps"][0]
    batch, loss = record["batches"][0], record["loss"][0]
    # --random_flip: each image mirrored or not, both seen in a batch of 8
    flipped = [torch.equal(x[i], batch[i].flip(-1)) for i in range(8)]
    assert all(f or torch.equal(x[i], batch[i]) for i, f in enumerate(flipped)) and 0 < sum(flipped) < 8
    torch.testing.assert_close(reconstruction, expected)  # the decoder reads z ~ q(z|x), not its mean
    # l1 + mse, plus --kl_weight x KL(q(z|x) || N(0, I)) summed over the latent and divided by the pixels (LDM)
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean() / x[0].numel()
    expected_loss = (reconstruction - x).abs().mean() + ((reconstruction - x) ** 2).mean() + 0.5 * kl
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=0)


def test_the_scaling_factor_gives_the_training_latents_unit_variance(vae_dir):
    args = train_vae.parse_args(["--dataset_name", FACES, "--max_train_samples", "36", "--center_crop"])
    images = tu.load_train_dataset(args, captions=False).select(range(28))  # the fixture's 36 - 8 held out
    pixels = torch.stack([tu.image_transform(args)(image) for image in images["image"]])
    vae = SmallVAE.from_pretrained(vae_dir / "vae")
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample(generator=torch.Generator().manual_seed(1))
    assert (latents * vae.config.scaling_factor).std().item() == pytest.approx(1.0, rel=0.03)


def test_caption_draws_are_uniform_over_each_images_own_captions():
    # image 0 has 2 captions in a table 3 wide (padded with its first): each must come up half the time, not 2/3
    _, rows, counts = tu.caption_table([["b", "a"], ["c"], ["a", "", "d"]])
    torch.manual_seed(0)
    drawn = tu.draw_caption_rows(rows, counts, torch.zeros(1000, dtype=torch.long))
    assert (drawn == 1).float().mean().item() == pytest.approx(0.5, abs=0.05)  # "b"; 2/3 if the padding were drawn


def test_a_frozen_text_encoder_conditions_each_sample_on_one_of_its_own_captions(tmp_path):
    # the frozen path looks each caption's hidden states up in a table computed once: each sample must get a row of
    # ITS image's captions (a mutation audit found indexing the table by image index unpinned)
    faces = "builtin:cartoon-faces?num_images=40&caption_style=rich&captions_per_image=2"
    args = train_unet.parse_args(["--dataset_name", faces])
    caption_lists = tu.image_caption_lists(tu.load_train_dataset(args))
    tokenizer = build_tokenizer([c for cs in caption_lists for c in cs], model_max_length=24, vocab_size=600)
    tokenizer.save_pretrained(tmp_path / "clip" / "tokenizer")
    encoder = build_text_encoder(
        tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    encoder.save_pretrained(tmp_path / "clip" / "text_encoder")
    indices, draw_caption_rows = [], tu.draw_caption_rows

    def spy_draw(caption_rows, caption_counts, index):
        indices.append(index.clone())
        return draw_caption_rows(caption_rows, caption_counts, index)

    out = tmp_path / "o"
    argv = [*COMMON, "--dataset_name", faces, "--output_dir", out, "--unet_config", TINY_UNET, "--resolution", 16]
    argv += ["--max_train_steps", 2, "--pretrained_text_encoder", tmp_path / "clip", "--conditioning_dropout_prob", 0]
    forward = sdscratch.SmallUNet.forward
    with (
        mock.patch.object(tu, "draw_caption_rows", spy_draw),
        mock.patch.object(sdscratch.SmallUNet, "forward", autospec=True, side_effect=forward) as spy,
    ):
        run(train_unet, argv + ["--validation_prompts", "Cartoon face"])
    hidden_states = torch.cat([call.args[3] for call in spy.call_args_list[:2]])  # the 2 steps' (8, L, D)
    images = torch.cat(indices).tolist()
    # the reference: what the written pipeline encodes each of the image's captions to when it samples
    pipe = CartoonFacePipeline.from_pretrained(out)
    with torch.no_grad():
        for states, image in zip(hidden_states, images):
            own = pipe.encode_prompt(caption_lists[image], "cpu", 1, False)[0]  # (2, L, D)
            assert min((states - e).abs().max().item() for e in own) < 1e-5, caption_lists[image]
    assert len(images) == 16 and len(set(images)) > 8


# ---- train_classifier.py: labels per head, held-out split, the saved dtype (a mutation audit found them unpinned)
def test_train_classifier_trains_each_head_on_its_own_column_of_shuffled_train_faces(tmp_path, monkeypatch):
    from sdscratch.evaluation import references
    from sdscratch.evaluation.references import CLASSIFIER_EVAL_SEED, CLASSIFIER_TRAIN_SEED, labelled_faces

    calls, targets, cross_entropy, augment = [], [], train_classifier.F.cross_entropy, train_classifier.augment

    def spy_faces(num_images, seed):
        calls.append((num_images, seed))
        return labelled_faces(num_images, seed)

    def spy_cross_entropy(logits, target):
        targets.append(target)
        return cross_entropy(logits, target)

    monkeypatch.setattr(train_classifier, "labelled_faces", spy_faces)
    monkeypatch.setattr(train_classifier.F, "cross_entropy", spy_cross_entropy)
    zero_grad = torch.optim.AdamW.zero_grad
    with (
        mock.patch.object(train_classifier, "augment", side_effect=augment) as augmented,
        mock.patch.object(torch.optim.AdamW, "zero_grad", autospec=True, side_effect=zero_grad) as zeroed,
    ):
        metrics = train_classifier.main(["--output_dir", str(tmp_path / "c"), "--num_train_images", "16",
                                         "--num_epochs", "1", "--num_eval_images", "8", "--train_batch_size", "8"])  # fmt: skip
    # each batch augmented (blur, noise), each step's gradients its own
    assert augmented.call_count == 2 and zeroed.call_count == 2
    # train and held-out faces from two data set seeds: never the same faces
    assert calls == [(16, CLASSIFIER_TRAIN_SEED), (8, CLASSIFIER_EVAL_SEED)] and len(targets) == 2 * 9
    _, labels = labelled_faces(16, CLASSIFIER_TRAIN_SEED)
    names = list(references.classifier_labels("cartoon-faces"))
    seen = torch.stack(targets).reshape(2, 9, 8).permute(0, 2, 1).reshape(16, 9)  # (steps, heads, B) -> (faces, heads)
    assert names == list(references.ATTRIBUTES)  # heads in the order of the labels' columns
    # every training face once per epoch, in a shuffled order, each head on its own column
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, labels.tolist()))
    assert not torch.equal(seen, labels)
    # the saved weights are stored in the dtype the metrics name
    with safe_open(tmp_path / "c" / "diffusion_pytorch_model.safetensors", "pt") as f:
        floats = {str(f.get_tensor(k).dtype) for k in f.keys() if f.get_tensor(k).is_floating_point()}
    assert floats == {"torch." + metrics["saved_dtype"]}


def test_held_out_accuracy_reads_each_attributes_own_column():
    class Stub:
        def classify(self, images):
            return {"a": torch.tensor([0, 1, 2, 3]), "b": torch.tensor([1, 1, 1, 1])}, None

    labels = torch.tensor([[0, 1], [1, 1], [0, 0], [3, 1]])  # a and b each right 3 times of 4, at other images
    accuracy = train_classifier.held_out_accuracy(
        Stub(), torch.zeros(4, 1, 2, 2, dtype=torch.uint8), labels, ["a", "b"]
    )
    assert accuracy == {"a": 0.75, "b": 0.75}


# ---- the UNet card's numbers and snippet, the LR schedule rebased for more processes (mutation audit) ----
def test_the_unet_card_names_what_the_run_did(tmp_path):
    grid = tmp_path / "validation" / "samples-000002.png"
    args = train_unet.parse_args(["--dataset_name", FACES, "--output_dir", str(tmp_path), "--text_encoder_lr", "4e-3"])
    tu.write_unet_card(args, {"loss": 0.123456}, 2, "1 min", "cpu", str(grid), ["first face", "second"], None,
                       num_inference_steps=10)  # fmt: skip
    card = (tmp_path / "README.md").read_text()
    # the snippet draws the first validation prompt at the steps the run could sample with
    assert "image = pipe('first face', num_inference_steps=10, guidance_scale=3.0," in card
    assert "![validation grid](./validation/samples-000002.png)" in card  # relative: the card travels with it
    assert "learning rate 0.0003 (text encoder 0.004)" in card and "| loss | 0.1235 |" in card
    assert "conditioned on a CLIP text encoder trained from scratch" in card
    frozen = train_unet.parse_args(["--dataset_name", FACES, "--output_dir", str(tmp_path),
                                    "--pretrained_text_encoder", "some/clip"])  # fmt: skip
    tu.write_unet_card(frozen, {}, 2, "1 min", "cpu", None, ["a face"], None)
    assert "conditioned on the frozen text encoder `some/clip`" in (tmp_path / "README.md").read_text()


def test_validation_images_outside_minus_one_one_are_clipped_not_wrapped():
    images = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 5)
    assert np.asarray(tu.to_pil(images)[0]).tolist() == [[0, 0, 128, 255, 255]]


def test_a_one_process_checkpoint_resumed_by_two_processes_rebases_the_lr_schedule(tmp_path):
    # the prepared scheduler of 2 processes counts 2 per optimizer step: a 1-process checkpoint at step 3 resumes at
    # count 6, where a linear decay over 10 steps (20 counts) stands at 1 - 6 / 20 (the 1-process test cannot tell)
    (tmp_path / "random_states_0.pkl").write_bytes(b"")  # written by one process
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    scheduler = tu.accelerator.get_scheduler("linear", optimizer=optimizer, num_warmup_steps=0, num_training_steps=20)
    for _ in range(3):  # the checkpoint's state: 3 steps of one process
        optimizer.step()
        scheduler.step()
    accelerator = mock.Mock(num_processes=2, is_main_process=True)
    tu.rebase_lr_scheduler(accelerator, scheduler, 3, str(tmp_path))
    assert scheduler.last_epoch == 6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1 - 6 / 20) == scheduler.get_last_lr()[0]


def test_a_resume_with_another_learning_rate_goes_on_at_the_flags_rate(tmp_path, caplog):
    # accelerate's load_state restored the checkpoint's base_lrs: the run went on at 1e-3 while the card said 2e-3
    # (and --scale_lr resumed on another number of processes kept the old scaled rate)
    argv = [*COMMON, "--dataset_name", FACES, "--output_dir", tmp_path, *TINY_VAE, "--checkpointing_steps", 2]
    argv += ["--lr_scheduler", "constant"]
    run(train_vae, [*argv, "--max_train_steps", 2, "--learning_rate", 1e-3])
    run(train_vae, [*argv, "--max_train_steps", 4, "--learning_rate", 2e-3, "--resume_from_checkpoint", "latest"])
    assert "was trained at learning rate(s) [0.001]; this run's flags" in caplog.text
    state = torch.load(tmp_path / "checkpoint-4" / "scheduler.bin", weights_only=True)
    assert state["base_lrs"] == [2e-3] and state["_last_lr"] == [2e-3]
    assert "learning rate 0.002" in (tmp_path / "README.md").read_text()


def test_several_launched_processes_that_accelerate_runs_alone_are_refused(tmp_path, monkeypatch):
    # without ACCELERATE_USE_CPU=1 on a machine without GPUs, each of 2 launched processes trained its own copy into
    # the same --output_dir and they crashed on each other's checkpoint files
    from types import SimpleNamespace

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    args = SimpleNamespace(output_dir=str(tmp_path), logging_dir="logs", gradient_accumulation_steps=1, seed=0,
                           mixed_precision="no", report_to="none")  # fmt: skip
    with mock.patch.object(tu.accelerator, "Accelerator", return_value=mock.Mock(num_processes=1)):
        with pytest.raises(ValueError, match="2 processes were launched .* set ACCELERATE_USE_CPU=1"):
            tu.make_accelerator(args)
    monkeypatch.setenv("WORLD_SIZE", "1")
    alone = mock.Mock(num_processes=1, device=torch.device("cpu"), is_local_main_process=True)
    with mock.patch.object(tu.accelerator, "Accelerator", return_value=alone):
        assert tu.make_accelerator(args) is alone


def test_an_epoch_sized_run_cannot_change_its_number_of_processes(tmp_path):
    # its length in steps is derived from the processes' batches: a 2-process run of 3 steps resumed on 1 process
    # went on to 7 (80 samples for a 64-sample epoch), and a finished one was trained again
    (tmp_path / "random_states_0.pkl").write_bytes(b"")
    (tmp_path / "random_states_1.pkl").write_bytes(b"")  # written by 2 processes
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    scheduler = tu.accelerator.get_scheduler("constant", optimizer=optimizer)
    accelerator = mock.Mock(num_processes=1, is_main_process=True)
    with pytest.raises(ValueError, match="length is given in epochs .* Pass --max_train_steps .* or resume on 2"):
        tu.rebase_lr_scheduler(accelerator, scheduler, 3, str(tmp_path), steps_from_epochs=True)
    tu.rebase_lr_scheduler(accelerator, scheduler, 3, str(tmp_path))  # a length in steps: rebased
    assert scheduler.last_epoch == 3


def test_each_process_crops_the_images_it_caches_with_its_own_seeded_generator():
    from types import SimpleNamespace

    from sdscratch.data.loading import build_image_transform

    image = Image.fromarray(np.arange(8 * 32 * 3, dtype=np.uint8).reshape(8, 32, 3))  # 25 crop offsets
    args = SimpleNamespace(seed=3, resolution=8, center_crop=False)
    for process_index in (0, 1):
        transform = tu.image_transform(args, process_index=process_index)
        expected = build_image_transform(8, generator=torch.Generator().manual_seed(3 + process_index))
        assert all(torch.equal(transform(image), expected(image)) for _ in range(4))
