"""training/train_clip.py end to end on a tiny CLIP and a few dozen built-in faces, in process."""

import json
import logging
import math
import os
import shutil
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPModel

from sdscratch import CartoonFacePipeline, build_tokenizer, load_text_components
from sdscratch import training_utils as tu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
import export_pretrained  # noqa: E402
import train_clip  # noqa: E402
import train_unet  # noqa: E402

TINY = str(ROOT / "training" / "configs" / "tiny.json")
FACES = "builtin:cartoon-faces?caption_style=mixed&num_images=40"


def run(script, argv):
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return script.main(script.parse_args([str(a) for a in argv]))


def clip_argv(out, steps=4):
    argv = ["--dataset_name", FACES, "--output_dir", out, "--config", TINY, "--report_to", "none", "--seed", 0]
    argv += ["--train_batch_size", 8, "--max_train_steps", steps, "--checkpointing_steps", 2, "--validation_steps", 2]
    argv += ["--vision_patch_size", 16, "--vision_num_hidden_layers", 1, "--vision_head_dim", 16]
    return argv + ["--num_validation_images", 8, "--random_flip", "--use_ema", "--lr_scheduler", "cosine"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    run(train_clip, clip_argv(out))
    return out


def test_writes_a_hub_clip_layout_with_metrics_and_a_card(clip_dir):
    config = json.loads((clip_dir / "config.json").read_text())
    assert config["model_type"] == "clip" and config["architectures"] == ["CLIPModel"]
    assert config["text_config"]["hidden_size"] == 32 and config["vision_config"]["image_size"] == 64
    assert config["vision_config"]["patch_size"] == 16 and config["vision_config"]["num_hidden_layers"] == 1
    assert (clip_dir / "model.safetensors").is_file() and (clip_dir / "tokenizer.json").is_file()
    assert sorted(p.name for p in clip_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert (clip_dir / "checkpoint-4" / "clip_ema" / "ema_state.json").is_file()
    metrics = json.loads((clip_dir / "clip_metrics.json").read_text())
    assert metrics["num_images"] == 8
    names = ["image_to_text_top1", "text_to_image_top1", "zero_shot_mouth", "zero_shot_eye_color", "zero_shot_glasses"]
    assert all(0.0 <= metrics[name] <= 1.0 for name in names)
    card = (clip_dir / "README.md").read_text()
    assert "--pretrained_text_encoder" in card and "zero_shot_mouth" in card and "Steps: 4" in card
    assert card.startswith("---\nlibrary_name: transformers\n")  # a CLIPModel folder, loaded by transformers
    assert f'load_text_components("{clip_dir}")' in card  # the usage snippet loads this folder
    # the saved model is the EMA one and reloads as a plain CLIPModel
    clip = CLIPModel.from_pretrained(clip_dir)
    ema = load_file(clip_dir / "checkpoint-4" / "clip_ema" / "model.safetensors")
    torch.testing.assert_close(clip.state_dict()["text_projection.weight"], ema["text_projection.weight"])


def test_its_text_encoder_conditions_a_unet_frozen(clip_dir, tmp_path):
    tokenizer, text_encoder = load_text_components(clip_dir)
    assert type(text_encoder).__name__ == "CLIPTextModel" and text_encoder.config.hidden_size == 32
    out = tmp_path / "unet"
    argv = ["--dataset_name", FACES, "--output_dir", out, "--unet_config", TINY, "--report_to", "none"]
    argv += ["--train_batch_size", 8, "--max_train_steps", 2, "--validation_steps", 100]
    argv += ["--pretrained_text_encoder", clip_dir, "--validation_prompts", "a smiling cartoon face"]
    run(train_unet, argv)
    pipe = CartoonFacePipeline.from_pretrained(out)
    assert len(pipe.tokenizer) == len(tokenizer)
    for key, value in text_encoder.state_dict().items():  # frozen: the CLIP text tower, unchanged
        torch.testing.assert_close(pipe.text_encoder.state_dict()[key], value, rtol=0, atol=0)

    # exported with the CLIP's card: one card says how every part was made; another CLIP is refused
    root = tmp_path / "pkg"
    argv = ["--model_path", str(out), "--output_root", str(root), "--text_encoder_path"]
    card = (
        Path(export_pretrained.main(["--name", "cartoon-faces"] + argv + [str(clip_dir)])) / "README.md"
    ).read_text()
    section = card.split("\n## Text encoder training\n")[1]
    assert "### Text encoder training" in section and "### Text encoder metrics" in section
    assert "zero_shot_mouth" in section and "Steps: 4" in section and "Usage" not in section
    other = tmp_path / "other-clip"
    clip = CLIPModel.from_pretrained(clip_dir)
    with torch.no_grad():
        clip.text_model.final_layer_norm.bias.add_(0.1)
    clip.save_pretrained(other)
    for name in ("README.md", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(clip_dir / name, other / name)
    with pytest.raises(ValueError, match="--text_encoder_path.*differs from the pipeline's.*final_layer_norm"):
        export_pretrained.main(["--name", "digits"] + argv + [str(other)])
    assert not (root / "digits").exists()
    with pytest.raises(ValueError, match="--text_encoder_path.*no README.md"):
        export_pretrained.main(["--name", "digits"] + argv + [str(tmp_path)])


def test_train_text_encoder_fine_tunes_it_from_the_clip(clip_dir, tmp_path):
    tokenizer, text_encoder = load_text_components(clip_dir)
    out = tmp_path / "unet"
    argv = ["--dataset_name", FACES, "--output_dir", out, "--unet_config", TINY, "--report_to", "none"]
    argv += ["--train_batch_size", 8, "--max_train_steps", 2, "--validation_steps", 100, "--learning_rate", 1e-2]
    argv += ["--pretrained_text_encoder", clip_dir, "--train_text_encoder", "--text_encoder_lr", 1e-2]
    run(train_unet, argv)
    pipe = CartoonFacePipeline.from_pretrained(out)
    assert pipe.tokenizer.get_vocab() == tokenizer.get_vocab()  # the CLIP's tokenizer, kept
    before, after = text_encoder.state_dict(), pipe.text_encoder.state_dict()
    assert before.keys() == after.keys()
    moved = [key for key in before if not torch.equal(before[key], after[key])]
    assert any("final_layer_norm" in key for key in moved) and len(moved) > len(before) // 2  # trained, from CLIP
    assert max((before[k] - after[k]).abs().max().item() for k in moved) < 0.1  # 2 small steps from its weights
    assert "fine-tuned from" in (out / "README.md").read_text()
    # export_pretrained.py --text_encoder_path accepts the CLIP it was fine-tuned from (weights differ by design)
    exported = export_pretrained.main(["--model_path", str(out), "--name", "cartoon-faces", "--output_root", str(tmp_path),
                                       "--text_encoder_path", str(clip_dir)])  # fmt: skip
    assert "## Text encoder training" in (tmp_path / "cartoon-faces" / "README.md").read_text()
    assert os.path.isdir(exported)
    # the learning-rate flag is accepted with it, refused for a frozen encoder
    base = ["--dataset_name", FACES, "--output_dir", "x", "--pretrained_text_encoder", "some/clip"]
    train_unet.parse_args([*base, "--train_text_encoder", "--text_encoder_lr", "1e-4"])
    with pytest.raises(ValueError, match="frozen unless --train_text_encoder"):
        train_unet.parse_args([*base, "--text_encoder_lr", "1e-4"])


def test_resume_matches_an_uninterrupted_run(clip_dir, tmp_path):
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    os.symlink(clip_dir / "checkpoint-2", resumed / "checkpoint-2", target_is_directory=True)
    run(train_clip, clip_argv(resumed) + ["--resume_from_checkpoint", "latest"])
    full, again = load_file(clip_dir / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert full.keys() == again.keys()
    for key in full:
        torch.testing.assert_close(full[key], again[key], rtol=0, atol=0, msg=key)


def test_warns_about_cut_captions_and_checkpoints_without_deprecation_warnings(tmp_path, caplog):
    # tiny.json's tokenizer keeps 24 tokens; the mixed style's longest captions have more: the CLIP never sees their end
    argv = clip_argv(tmp_path / "clip", steps=1) + ["--checkpointing_steps", 100, "--gradient_checkpointing"]
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = run(train_clip, argv)
    assert "distinct captions are longer than the tokenizer's model_max_length=24 tokens" in caplog.text
    assert "section of --config" in caplog.text  # train_clip.py's flag for the JSON, not train_unet.py's
    # --gradient_checkpointing through transformers 5's activation_checkpointing_enable, without its deprecation warning
    assert model.text_model.encoder.gradient_checkpointing and model.vision_model.encoder.gradient_checkpointing
    assert not [w for w in caught if "gradient_checkpointing_enable" in str(w.message)]


def test_contrastive_loss_treats_pairs_with_the_same_caption_as_positives():
    captions = torch.tensor([0, 0, 1, 2])
    same = (captions[:, None] == captions[None, :]).float()
    # perfect scores: each image sure of its caption and, equally, of the copies of it
    loss = train_clip.contrastive_loss(100 * same, captions)
    # rows 0 and 1 spread half their target on each copy: cross-entropy = entropy of (1/2, 1/2) = log 2
    assert loss.item() == pytest.approx(2 * math.log(2) / 4, abs=1e-6)
    # plain CLIP (each copy a negative) would reward telling identical captions apart; here that costs more
    apart = 100 * torch.eye(4)
    assert torch.nn.functional.cross_entropy(apart, torch.arange(4)).item() < 1e-6
    assert train_clip.contrastive_loss(apart, captions).item() > 10 * loss.item()
    assert train_clip.contrastive_loss(-100 * same, captions).item() > 50


def test_retrieval_metrics_match_an_independent_count():
    captions = ["a red cat", "a blue dog", "a red cat", "a cat", "a blue dog", "a dog"]  # copies: right for each
    tokenizer = build_tokenizer(captions, model_max_length=8, vocab_size=600)
    argv = ["--dataset_name", FACES, "--config", TINY, "--resolution", 32, "--vision_patch_size", 16]
    args = train_clip.parse_args([str(a) for a in argv + ["--vision_head_dim", 16]])
    model = train_clip.build_clip(args, train_clip.load_config(TINY), tokenizer).eval()
    images = torch.randn(len(captions), 3, 32, 32)
    metrics = train_clip.evaluate_clip(model, tokenizer, images, captions)
    with torch.no_grad():
        ids = tokenizer(captions, padding="max_length", max_length=8, return_tensors="pt").input_ids
        logits = model(input_ids=ids, pixel_values=images).logits_per_image  # (images, texts)
    image_to_text = [captions[j] == captions[i] for i, j in enumerate(logits.argmax(dim=1).tolist())]
    text_to_image = [captions[i] == captions[j] for j, i in enumerate(logits.argmax(dim=0).tolist())]
    assert metrics["num_images"] == len(captions)
    assert metrics["image_to_text_top1"] == pytest.approx(sum(image_to_text) / len(captions))
    assert metrics["text_to_image_top1"] == pytest.approx(sum(text_to_image) / len(captions))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--vision_patch_size", 7], "--vision_patch_size must divide --resolution 64"),
        (["--num_validation_images", 1], "--num_validation_images must be >= 2"),
        (["--train_batch_size", 0], "--train_batch_size must be >= 1"),
        (["--vision_head_dim", 0], "--vision_head_dim must be >= 1, got 0"),
        (["--vision_head_dim", -8], "--vision_head_dim must be >= 1, got -8"),
        (["--vision_num_hidden_layers", 0], "--vision_num_hidden_layers must be >= 1, got 0"),
        (["--vision_hidden_size", 0], "--vision_hidden_size must be >= 1 .*got 0"),
        (["--vision_hidden_size", -64], "--vision_hidden_size must be >= 1 .*got -64"),
    ],
)
def test_bad_flags(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        train_clip.parse_args([str(a) for a in clip_argv(tmp_path) + extra])


def test_vision_head_dim_must_divide_the_width(tmp_path, monkeypatch):
    def no_data(args):  # the check comes before the data set is loaded and its images decoded
        raise AssertionError("loaded the data set before checking --vision_head_dim")

    monkeypatch.setattr(train_clip.tu, "load_train_dataset", no_data)
    with pytest.raises(ValueError, match="--vision_head_dim 24 must divide the ViT width 32"):
        run(train_clip, clip_argv(tmp_path / "x") + ["--vision_head_dim", 24])
    with pytest.raises(ValueError, match="--vision_head_dim 16 must divide the ViT width 40"):
        run(train_clip, clip_argv(tmp_path / "x") + ["--vision_hidden_size", 40])


def test_a_finished_run_started_again_takes_no_step(tmp_path):
    # 32 training images, batch 8: 4 steps an epoch, so a run of 2 steps ends mid-epoch, at checkpoint-2
    out = tmp_path / "clip"
    argv = clip_argv(out, steps=2) + ["--resume_from_checkpoint", "latest"]
    run(train_clip, argv)
    before, card = load_file(out / "model.safetensors"), (out / "README.md").read_text()
    run(train_clip, argv)  # the same command again: nothing left to train
    after = load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(before[key], after[key], rtol=0, atol=0, msg=key)
    assert (out / "README.md").read_text() == card and "Steps: 2 " in card
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]


# ---- the training step and the held-out split against independent references (a mutation audit found them unpinned)
def test_contrastive_loss_is_clips_symmetric_cross_entropy_with_shared_captions_as_positives():
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 3  # not symmetric: both directions count
    captions = torch.tensor([5, 5, 1, 2])  # images 0 and 1 share a caption
    targets = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])

    def cross_entropy(rows):  # -sum_j p_ij log softmax_j(rows_i), averaged over i, written out
        return -(targets * (rows - rows.exp().sum(dim=1, keepdim=True).log())).sum(dim=1).mean()

    expected = (cross_entropy(logits) + cross_entropy(logits.t())) / 2
    torch.testing.assert_close(train_clip.contrastive_loss(logits, captions), expected, rtol=1e-6, atol=1e-6)
    # all captions distinct: exactly CLIP's loss (Radford et al. 2021, Figure 3)
    labels = torch.arange(4)
    clip = torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.t(), labels)
    torch.testing.assert_close(train_clip.contrastive_loss(logits, torch.tensor([3, 0, 2, 1])), clip / 2)


def test_a_clip_step_pairs_each_image_with_its_own_caption_and_holds_out_the_last_images(tmp_path):
    # 40 random-pixel images, 3 captions: every batch of 8 has images that share a caption
    folder = tmp_path / "data"
    folder.mkdir()
    pixels = torch.randint(0, 256, (40, 16, 16, 3), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    texts = [("a red cat", "a blue dog", "a green bird")[i % 3] for i in range(40)]
    with open(folder / "metadata.jsonl", "w") as f:
        for i, image in enumerate(pixels.numpy()):
            Image.fromarray(image).save(folder / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": texts[i]}) + "\n")
    argv = ["--train_data_dir", folder, "--output_dir", tmp_path / "o", "--config", TINY, "--report_to", "none"]
    argv += ["--train_batch_size", 8, "--max_train_steps", 2, "--validation_steps", 1, "--resolution", 16]
    argv += ["--vision_patch_size", 8, "--vision_num_hidden_layers", 1, "--vision_head_dim", 16, "--random_flip"]
    argv += ["--num_validation_images", 8, "--seed", 0]
    images = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1  # (40, 3, 16, 16) in [-1, 1], as the loader decodes
    steps, held_out, forward, loss = [], [], CLIPModel.forward, train_clip.contrastive_loss
    draw_caption_rows, evaluate_clip = tu.draw_caption_rows, train_clip.evaluate_clip

    def spy_draw(caption_rows, caption_counts, index):
        steps.append({"index": index.clone()})
        return draw_caption_rows(caption_rows, caption_counts, index)

    def spy_forward(self, input_ids=None, pixel_values=None, **kwargs):
        steps[-1].update(input_ids=input_ids, pixel_values=pixel_values)
        return forward(self, input_ids=input_ids, pixel_values=pixel_values, **kwargs)

    def spy_loss(logits, caption_ids):
        steps[-1]["caption_ids"] = caption_ids
        return loss(logits, caption_ids)

    def spy_evaluate(model, tokenizer, *holdout):
        held_out.append(holdout)
        return evaluate_clip(model, tokenizer, *holdout)

    with (
        mock.patch.object(tu, "draw_caption_rows", spy_draw),
        mock.patch.object(CLIPModel, "forward", spy_forward),
        mock.patch.object(train_clip, "contrastive_loss", spy_loss),
        mock.patch.object(train_clip, "evaluate_clip", spy_evaluate),
    ):
        run(train_clip, argv)
    tokenizer, _ = load_text_components(tmp_path / "o")
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    assert len(steps) == 2
    flips = []
    for step in steps:
        index = step["index"].tolist()
        assert max(index) < 32  # the last 8 of the 40 images are held out, never trained on
        # each image beside its own caption; the loss's positives are exactly the pairs with the same caption
        torch.testing.assert_close(step["input_ids"], ids[index], rtol=0, atol=0)
        same = torch.tensor([[texts[i] == texts[j] for j in index] for i in index])
        assert torch.equal(step["caption_ids"][:, None] == step["caption_ids"][None, :], same) and same.sum() > 8
        # --random_flip: the image or its left-right mirror image
        for image, i in zip(step["pixel_values"], index):
            assert torch.allclose(image, images[i], atol=1e-5) or torch.allclose(image, images[i].flip(-1), atol=1e-5)
            flips.append(not torch.allclose(image, images[i], atol=1e-5))
    assert 0 < sum(flips) < len(flips)
    # validation (after each step and at the end): the 8 held-out images, each with its own caption
    assert len(held_out) == 3
    for holdout_images, captions, attributes in held_out:
        torch.testing.assert_close(holdout_images, images[32:], rtol=0, atol=1e-5)
        assert captions == texts[32:] and attributes is None


@pytest.mark.parametrize("start, clamped", [(10.0, math.log(100)), (-1.0, 0.0)])
def test_the_learned_temperature_is_clamped_as_clips(tmp_path, start, clamped):
    # CLIP keeps its logit scale exp(t) in [1, 100] after every step (Radford et al. 2021, section 2.5)
    build_clip = train_clip.build_clip

    def build_hot(*args):
        model = build_clip(*args)
        model.logit_scale.data.fill_(start)
        return model

    with mock.patch.object(train_clip, "build_clip", build_hot):
        model = run(train_clip, clip_argv(tmp_path / "o", steps=1) + ["--checkpointing_steps", 100])
    assert model.logit_scale.item() == pytest.approx(clamped)


def test_zero_shot_accuracy_counts_the_nearest_probe_prompt_per_attribute(monkeypatch):
    from sdscratch.data import ATTRIBUTES, attribute_probe

    dataset = tu.load_train_dataset(train_clip.parse_args(["--dataset_name", FACES]))
    faces = [{name: dataset[i][name] for name in ATTRIBUTES} for i in range(12)]
    prompts = []  # every text the evaluation embeds, in order: its embedding is the one-hot of its position

    def fake_tokenize(tokenizer, texts):
        prompts.extend(text for text in texts if text not in prompts)
        return torch.tensor([prompts.index(text) for text in texts])

    def fake_embed(model, input_ids=None, pixel_values=None):
        if input_ids is not None:
            return torch.nn.functional.one_hot(input_ids, 4096).float()
        # image i: nearest to the prompt of its true value of every attribute, except face 0's mouth
        embeds = torch.zeros(len(pixel_values), 4096)
        for i, face in enumerate(faces):
            for name in ATTRIBUTES:
                values, probe = attribute_probe(face, name)
                if face[name] not in values:  # glasses_color "none": no frames, not probed
                    continue
                value = face[name] if (i, name) != (0, "mouth") else next(v for v in values if v != face[name])
                embeds[i, fake_tokenize(None, [probe[values.index(value)]])] += 1
        return embeds

    monkeypatch.setattr(train_clip, "tokenize", fake_tokenize)
    monkeypatch.setattr(train_clip, "embed", fake_embed)
    metrics = train_clip.evaluate_clip(torch.nn.Linear(1, 1), None, torch.zeros(12, 1), ["a"] * 12, faces)
    assert metrics["zero_shot_mouth"] == pytest.approx(11 / 12)
    for name in set(ATTRIBUTES) - {"mouth"}:
        assert metrics[f"zero_shot_{name}"] == 1.0, name
