"""The editing evaluation (sdscratch/evaluation/editing.py) and `python -m sdscratch.evaluate --edit`: targets and
prompts, the metrics on exact stand-ins (a pipeline that returns the face unedited, one that redraws it with the
requested hair colour), the tiny random pipeline, bad arguments, and the model card sections."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sdscratch.data.cartoon_faces import ATTRIBUTES, face_seed, make_caption, parse_caption, render_face
from sdscratch.demo import tiny_random_pipeline, top_mask
from sdscratch.evaluation import evaluate_editing, load_classifier
from sdscratch.evaluation.editing import edit_prompts, edit_targets, editing_grid, kept_region_psnr
from sdscratch.evaluation.references import EVALUATION_SEED_OFFSET, held_out_faces, pil_to_uint8

HAIR = ATTRIBUTES["hair_color"]


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("cartoon-faces")


class FakePipeline:
    """Stands in for a 16x16-latent, factor-4 cartoon-faces pipeline: records its calls and returns `draw(...)`."""

    def __init__(self, draw):
        self.unet = SimpleNamespace(config=SimpleNamespace(sample_size=16))
        self.vae_scale_factor = 4
        self.draw, self.calls, self.done = draw, [], 0

    def __call__(self, prompt, image, generator, strength, num_inference_steps, output_type, **kwargs):
        assert output_type == "np" and len(prompt) == len(generator) == image.shape[0]
        self.calls.append({"strength": strength, "mask_image": kwargs.get("mask_image"), "size": len(prompt)})
        images = self.draw(prompt, image, range(self.done, self.done + len(prompt)))
        self.done += len(prompt)
        return SimpleNamespace(images=images)


def unedited(prompts, image, indices):
    return image.permute(0, 2, 3, 1).numpy()  # (B, H, W, C) in [0, 1]: the face itself


def redrawn(num_images, seed=0):
    """The generator's own face, same jitter and attributes, with the hair colour the prompt asks for."""
    attributes_list, _ = held_out_faces(num_images, seed=seed)

    def draw(prompts, image, indices):
        faces = []
        for prompt, i in zip(prompts, indices):
            attributes = {**attributes_list[i], "hair_color": parse_caption(prompt)["hair_color"]}
            faces.append(render_face(attributes, size=64, seed=face_seed(EVALUATION_SEED_OFFSET + 2 * seed, i)))
        return pil_to_uint8(faces, 3).permute(0, 2, 3, 1).numpy().astype(np.float32) / 255

    return draw


def test_targets_are_new_colours_covering_every_value_and_prompts_name_them():
    attributes_list, faces = held_out_faces(30, seed=0, size=32)
    assert faces.shape == (30, 3, 32, 32)
    for seed in (0, 1):
        targets = edit_targets(attributes_list, seed=seed)
        assert all(t != a["hair_color"] for t, a in zip(targets, attributes_list))
        for block in range(0, 30, 10):  # every block of 10 faces asks for every colour once
            assert sorted(targets[block : block + 10]) == sorted(HAIR)
    prompts = edit_prompts(attributes_list, targets)
    for prompt, target, attributes in zip(prompts, targets, attributes_list):
        assert prompt == make_caption({**attributes, "hair_color": target})
        assert parse_caption(prompt)["hair_color"] == target and parse_caption(prompt)["skin"] == attributes["skin"]
    assert edit_targets(attributes_list, seed=0) != edit_targets(attributes_list, seed=1)


def test_kept_region_psnr_reads_only_the_kept_pixels():
    originals = np.full((2, 8, 8, 3), 0.5, dtype=np.float32)
    keep = np.asarray(top_mask(8, 0.5)) < 128  # bottom half kept
    images = originals.copy()
    images[:, :4] = 0.0  # the repainted region may change freely
    assert kept_region_psnr(images, originals, keep) == np.inf
    images[:, 4:] += 0.1  # MSE 0.01 on the kept region: 20 dB
    assert kept_region_psnr(images, originals, keep) == pytest.approx(20.0, abs=1e-4)


def test_an_unedited_face_scores_no_success_and_full_preservation(classifier):
    pipeline = FakePipeline(unedited)
    metrics, outputs = evaluate_editing(pipeline, "inpaint", classifier, num_images=10, batch_size=4)
    assert [call["size"] for call in pipeline.calls] == [4, 4, 2]  # by batches
    assert all(call["strength"] == 1.0 and call["mask_image"] is not None for call in pipeline.calls)
    assert metrics["edit_success"] == 0 and metrics["hair_color_unchanged"] == 1
    assert metrics["edit_count_per_value"] == dict.fromkeys(HAIR, 1)
    assert set(metrics["preservation"]) == set(ATTRIBUTES) - {"hair_color"}
    assert all(share == 1 for share in metrics["preservation"].values()) and metrics["all_preserved"] == 1
    assert metrics["edited_and_all_preserved"] == 0 and metrics["kept_region_psnr"] == np.inf
    assert metrics["vae_round_trip"] is None and metrics["mode"] == "inpaint" and metrics["image_size"] == 64
    assert outputs["images"].shape == outputs["originals"].shape == (10, 64, 64, 3)


def test_a_face_redrawn_with_the_asked_hair_colour_scores_full_success_and_preservation(classifier):
    pipeline = FakePipeline(redrawn(20, seed=1))
    metrics, outputs = evaluate_editing(pipeline, "img2img", classifier, num_images=20, seed=1)
    assert all(call["strength"] == 0.6 and call["mask_image"] is None for call in pipeline.calls)
    assert metrics["edit_success"] == 1 and metrics["hair_color_unchanged"] == 0
    assert metrics["edit_success_per_value"] == dict.fromkeys(HAIR, 1.0)
    assert metrics["all_preserved"] == metrics["edited_and_all_preserved"] == 1
    assert metrics["kept_region_psnr"] is None and metrics["strength"] == 0.6
    grid = editing_grid(outputs, 12)  # 12 faces: two blocks of originals above their edits, the last one padded
    assert grid.mode == "P" and grid.size[0] == 8 * (96 + 4)


def test_tiny_random_pipeline_is_deterministic_and_batch_size_free():
    pipeline = tiny_random_pipeline()
    kwargs = {"num_images": 3, "num_inference_steps": 2, "guidance_scale": 2.0, "seed": 0}
    first, outputs = evaluate_editing(pipeline, "inpaint", batch_size=3, **kwargs)
    second, again = evaluate_editing(pipeline, "inpaint", batch_size=2, **kwargs)
    np.testing.assert_allclose(outputs["images"], again["images"], atol=1e-5)
    assert first["preservation"] == second["preservation"] and first["edit_success"] == second["edit_success"]
    assert np.isfinite(first["kept_region_psnr"]) and first["guidance_scale"] == 2.0
    assert np.isfinite(first["vae_round_trip"]["kept_region_psnr"])
    assert set(first["vae_round_trip"]["preservation"]) == set(first["preservation"])
    assert first["scheduler"] == "DPMSolverMultistepScheduler"
    img2img, _ = evaluate_editing(pipeline, "img2img", strength=0.5, **kwargs)
    assert img2img["strength"] == 0.5 and img2img["kept_region_psnr"] is None


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"mode": "outpaint"}, r"mode must be one of \['inpaint', 'img2img'\], got 'outpaint'"),
        ({"strength": 0.0}, r"strength must be in \(0, 1\]"),
        ({"strength": 1.5}, r"strength must be in \(0, 1\]"),
        ({"num_images": 0}, "num_images must be >= 1, got 0"),
        ({"strength": 0.01}, "num_inference_steps \\* strength must give at least one step"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_arguments_are_refused_before_sampling(kwargs, error):
    pipeline = FakePipeline(lambda *a: pytest.fail("sampled"))
    with pytest.raises(ValueError, match=error):
        evaluate_editing(pipeline, **{"mode": "inpaint", **kwargs})


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"num_images": 2.5}, "num_images must be an integer, got 2.5"),  # was: "slice indices must be integers"
        ({"num_images": "3"}, "num_images must be an integer, got '3'"),
        ({"num_inference_steps": 2.5}, "num_inference_steps must be an integer, got 2.5"),
        ({"batch_size": 2.5}, "batch_size must be an integer, got 2.5"),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ],
)
def test_non_integer_counts_are_named_before_sampling(kwargs, error, monkeypatch):
    monkeypatch.setattr("sdscratch.evaluation.editing.load_classifier", lambda *a: pytest.fail("classifier loaded"))
    pipeline = FakePipeline(lambda *a: pytest.fail("sampled"))
    with pytest.raises(TypeError, match=error):
        evaluate_editing(pipeline, **{"mode": "inpaint", **kwargs})


def test_a_negative_seed_is_refused_before_sampling(monkeypatch):
    # the held-out faces are data set 10000 + 2 * seed: seed -5000 edited the training faces (the CLI refused it)
    monkeypatch.setattr("sdscratch.evaluation.editing.load_classifier", lambda *a: pytest.fail("classifier loaded"))
    pipeline = FakePipeline(lambda *a: pytest.fail("sampled"))
    with pytest.raises(ValueError, match=r"seed must be >= 0 \(the held-out faces are data set 10000"):
        evaluate_editing(pipeline, mode="inpaint", seed=-5000)


def test_a_digits_pipeline_is_refused(monkeypatch):
    pipeline = tiny_random_pipeline(name="digits")
    monkeypatch.setattr(type(pipeline), "__call__", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ValueError, match="pipeline must be a cartoon-faces pipeline.*1-channel"):
        evaluate_editing(pipeline, "img2img", num_images=2)


# ---------------------------------------------------------------- python -m sdscratch.evaluate --edit


@pytest.mark.parametrize(
    "flags, error",
    [
        (["--edit", "inpaint", "--task", "digits"], "--edit asks for a new hair colour"),
        (["--strength", "0.5"], "--strength is the strength of an edit: use it with --edit"),
        (["--edit", "img2img", "--strength", "0"], "--strength must be in (0, 1]"),
        (["--edit", "img2img", "--strength", "1.2"], "--strength must be in (0, 1]"),
        (["--edit", "inpaint", "--caption_style", "rich"], "--edit prompts are template captions"),
        (["--edit", "inpaint", "--num_images", "0"], "--num_images must be >= 1 with --edit"),
        (["--edit", "img2img", "--strength", "0.01"], "runs no step"),
        (["--edit", "paint"], "argument --edit: invalid choice: 'paint'"),
    ],
)
def test_edit_flags_are_checked_before_any_work(tmp_path, capsys, flags, error):
    from sdscratch.evaluate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out"), *flags])
    assert exit_info.value.code == 2 and error in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_edit_command_writes_metrics_grid_and_its_own_card_sections(tmp_path, capsys):
    from PIL import Image

    from sdscratch.evaluate import main

    torch.manual_seed(0)
    tiny_random_pipeline().save_pretrained(tmp_path / "pipe")
    card = tmp_path / "pipe" / "README.md"
    card.write_text("# tiny\n\n## Evaluation\n\ngeneration numbers\n\n## Limitations\n\nmany\n")
    common = ["--model_path", str(tmp_path / "pipe"), "--num_images", "2", "--num_inference_steps", "2",
              "--guidance_scale", "3", "--batch_size", "2", "--model_card"]  # fmt: skip
    for mode in ("inpaint", "inpaint", "img2img"):
        metrics = main(common + ["--output_dir", str(tmp_path / mode), "--edit", mode])
    saved = json.loads((tmp_path / "img2img" / "metrics.json").read_text())
    assert saved["mode"] == "img2img" and saved["strength"] == 0.6 and saved["grid"] == "grid.png"
    assert saved["preservation"] == metrics["preservation"] and saved["scheduler_name"] == "dpm++"
    assert json.loads((tmp_path / "inpaint" / "metrics.json").read_text())["kept_region_psnr"] > 0
    assert Image.open(tmp_path / "inpaint" / "grid.png").size[0] == 8 * (96 + 4)
    text = card.read_text()
    assert text.count("\n## Evaluation of inpainting\n") == text.count("\n## Evaluation of img2img\n") == 1
    assert "\n## Evaluation\n\ngeneration numbers\n\n## Limitations\n\nmany\n" in text  # other sections stay
    assert "--edit inpaint" in text and "PSNR of the kept (unmasked) region" in text and "| hair_style |" in text
    assert (tmp_path / "pipe" / "evaluation_grid_inpainting.png").is_file()
    assert (tmp_path / "pipe" / "evaluation_grid_img2img.png").is_file()
    assert "edit success (hair colour as asked)" in capsys.readouterr().out


def test_preservation_leaves_out_eye_colour_only_behind_sunglasses():
    from sdscratch.evaluation.editing import _read_changes

    originals = [{"glasses": "sunglasses", "eye_color": "blue", "skin": "dark"},
                 {"glasses": "round", "eye_color": "green", "skin": "white"}]  # fmt: skip
    results = [{"glasses": "sunglasses", "eye_color": "gray", "skin": "white"},
               {"glasses": "round", "eye_color": "green", "skin": "white"}]  # fmt: skip
    assert _read_changes(originals, results, ["eye_color", "skin"]) == {"eye_color": 1.0, "skin": 0.5}
    assert _read_changes(originals[:1], results[:1], ["eye_color"]) == {"eye_color": None}


def test_a_classifier_without_hair_colour_is_refused_before_sampling():
    pipeline = FakePipeline(lambda *a: pytest.fail("sampled"))  # was: KeyError 'hair_color' after sampling
    with pytest.raises(ValueError, match=r"classifier must read 'hair_color' .* this one reads \['digit'\]"):
        evaluate_editing(pipeline, "inpaint", load_classifier("digits"), num_images=2)


def test_kept_region_and_the_vae_floor_are_read_against_the_originals(classifier):
    from sdscratch.demo import TOP_MASK_FRACTION
    from sdscratch.evaluation.reconstruction import reconstruct_images

    repainted = np.asarray(top_mask(64, TOP_MASK_FRACTION)) >= 128

    def repaint(prompts, image, indices):  # the masked region blacked out, the rest kept exactly
        images = image.permute(0, 2, 3, 1).numpy().copy()
        images[:, repainted] = 0.0
        return images

    pipeline = FakePipeline(repaint)
    pipeline.vae = tiny_random_pipeline().vae
    metrics, outputs = evaluate_editing(pipeline, "inpaint", classifier, num_images=4, batch_size=4)
    assert metrics["kept_region_psnr"] == np.inf
    _, faces = held_out_faces(4)
    reconstructions = reconstruct_images(pipeline.vae, faces)
    error = ((reconstructions.double() - faces.double()) / 2).permute(0, 2, 3, 1).numpy()[:, ~repainted] ** 2
    floor = metrics["vae_round_trip"]
    assert floor["kept_region_psnr"] == pytest.approx(np.mean(10 * np.log10(1 / error.mean(axis=(1, 2)))))
    read = classifier.decode_predictions(classifier.classify(reconstructions)[0])
    originals = outputs["original_predictions"]
    assert floor["hair_color_unchanged"] == np.mean(
        [r["hair_color"] == o["hair_color"] for r, o in zip(read, originals)]
    )
    assert floor["hair_color_unchanged"] != metrics["hair_color_unchanged"]
    # the grid: a short last block is padded, so that each edit stays under its original (4 faces, 3 columns)
    assert editing_grid(outputs, 4, columns=3).size[1] == 2 * editing_grid(outputs, 3, columns=3).size[1]


def test_eye_colour_is_left_out_by_the_originals_sunglasses_not_the_results():
    from sdscratch.evaluation.editing import _read_changes

    originals = [{"glasses": "round", "eye_color": "blue"}]
    results = [{"glasses": "sunglasses", "eye_color": "gray"}]  # the edit put sunglasses on: the eyes changed
    assert _read_changes(originals, results, ["eye_color"]) == {"eye_color": 0.0}
    assert _read_changes(results, originals, ["eye_color"]) == {"eye_color": None}


def test_editing_card_section_shows_each_number_beside_its_floor():
    from sdscratch.evaluation.model_card import editing_card_section

    metrics = {"mode": "inpaint", "mask_fraction": 0.42, "num_images": 4, "strength": 1.0, "num_inference_steps": 2,
               "scheduler_name": "dpm++", "guidance_scale": 3.0, "edit_success": 0.75, "hair_color_unchanged": 0.25,
               "all_preserved": 0.5, "edited_and_all_preserved": 0.25, "seconds_per_image": 0.1,
               "preservation": {"skin": 0.5, "eye_color": None}, "edit_success_per_value": {"black": 1.0, "red": 0.5},
               "kept_region_psnr": 20.0,
               "vae_round_trip": {"preservation": {"skin": 1.0, "eye_color": 0.75}, "kept_region_psnr": 27.5}}  # fmt: skip
    text = editing_card_section(metrics, "cmd")
    assert text.startswith("## Evaluation of inpainting\n") and "the top 42% of the image" in text
    assert "| skin | 50.00% | 100.00% |" in text and "| eye_color (faces without sunglasses) | n/a | 75.00% |" in text
    assert "| hair colour asked for | black | red |\n|---|---|---|\n| edit success | 100% | 50% |" in text
    assert "20.00 dB (the VAE round trip alone: 27.50 dB)." in text and "**75.00%**" in text


def test_targets_never_ask_for_the_own_colour_in_any_block_or_seed():
    from sdscratch.evaluation.references import balanced_face_attributes

    attributes_list = balanced_face_attributes(100)  # 10 blocks of 10 faces
    for seed in range(10):
        own = [HAIR.index(a["hair_color"]) for a in attributes_list]
        shifts = [(HAIR.index(t) - o) % len(HAIR) for t, o in zip(edit_targets(attributes_list, seed=seed), own)]
        assert set(shifts) == set(range(1, len(HAIR)))  # every shift 1..9 used, 0 (the own colour) never
