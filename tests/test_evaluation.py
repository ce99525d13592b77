"""sdscratch.evaluation: reconstruction metrics, Frechet distance, classifiers, adherence, the evaluate command."""

import importlib.util
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from sdscratch.data.cartoon_faces import ANY, ATTRIBUTES, CAPTION_ATTRIBUTES, parse_caption
from sdscratch.evaluation import (
    AttributeClassifier,
    adherence_from_predictions,
    balanced_face_attributes,
    build_adherence_prompts,
    evaluate_reconstruction,
    frechet_distance,
    frechet_distance_from_features,
    load_classifier,
    ms_ssim,
    ms_ssim_num_scales,
    mse,
    psnr,
    reconstruction_metrics,
    ssim,
    unnamed_attribute_balance,
)
from sdscratch.evaluation.frechet import feature_statistics
from sdscratch.evaluation.reconstruction import gaussian_window
from sdscratch.evaluation.references import labelled_digits, labelled_faces, render_faces, uint8_to_float

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smooth_images(batch=2, channels=3, size=32, seed=0):
    """Random but image-like (spatially correlated) batches in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, channels, size // 4, size // 4, generator=g)
    images = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (images * 2 - 1 + 0.05 * torch.randn(images.shape, generator=g)).clamp(-1, 1)


def blur(images, sigma=1.5):
    window = gaussian_window(7, sigma).float()
    kernel = (window[:, None] * window[None, :]).expand(images.shape[1], 1, 7, 7)
    return F.conv2d(F.pad(images, (3, 3, 3, 3), mode="replicate"), kernel, groups=images.shape[1])


# ---------------------------------------------------------------- reconstruction metrics


def test_mse_and_psnr_of_known_error():
    x = torch.zeros(2, 3, 16, 16)
    y = x + 0.2  # 0.1 on [0, 1] pixels -> MSE 0.01 -> PSNR 20 dB
    assert torch.allclose(mse(x, y), torch.full((2,), 0.01), atol=1e-7)
    assert torch.allclose(psnr(x, y), torch.full((2,), 20.0), atol=1e-4)
    assert torch.isinf(psnr(x, x)).all()
    with pytest.raises(ValueError, match="same shape"):
        mse(x, y[:1])


def test_ssim_of_identical_images_is_one():
    x = smooth_images()
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-6)


def _reference_ssim(x, y, with_cs=False):
    """skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1) re-implemented with scipy: filter the whole image, crop the 5-pixel border. `(C, H, W)`."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2
    values, cs_values = [], []
    for channel in range(x.shape[0]):
        a, b = x[channel].astype(np.float64), y[channel].astype(np.float64)
        f = lambda z: gaussian_filter(z, sigma=1.5, truncate=3.5)  # noqa: E731  (11 taps)
        ux, uy = f(a), f(b)
        vx, vy, vxy = f(a * a) - ux * ux, f(b * b) - uy * uy, f(a * b) - ux * uy
        cs = (2 * vxy + c2) / (vx + vy + c2)
        s = (2 * ux * uy + c1) / (ux**2 + uy**2 + c1) * cs
        values.append(s[5:-5, 5:-5].mean())
        cs_values.append(cs[5:-5, 5:-5].mean())
    return (np.array(values), np.array(cs_values)) if with_cs else float(np.mean(values))


def test_ssim_matches_scipy_reference():
    x = smooth_images(seed=1)
    y = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    ours = ssim(x, y)
    for i in range(2):
        expected = _reference_ssim(((x[i] + 1) / 2).numpy(), ((y[i] + 1) / 2).numpy())
        assert abs(ours[i].item() - expected) < 1e-6, (ours[i].item(), expected)


def test_ms_ssim_matches_two_scale_reference():
    # 32x32: scales 32 and 16; MS-SSIM = mean_c cs_32^w1 * ssim_16^w2 with (w1, w2) = (0.0448, 0.2856) renormalised.
    x = smooth_images(seed=4)
    y = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
    w1, w2 = np.array([0.0448, 0.2856]) / (0.0448 + 0.2856)
    for i in range(2):
        a, b = ((x[i : i + 1] + 1) / 2).double(), ((y[i : i + 1] + 1) / 2).double()
        _, cs = _reference_ssim(a[0].numpy(), b[0].numpy(), with_cs=True)
        s, _ = _reference_ssim(F.avg_pool2d(a, 2)[0].numpy(), F.avg_pool2d(b, 2)[0].numpy(), with_cs=True)
        expected = np.mean(np.clip(cs, 0, None) ** w1 * np.clip(s, 0, None) ** w2)
        assert abs(ms_ssim(x, y)[i].item() - expected) < 1e-5


def test_ms_ssim_scales_and_small_images():
    assert [ms_ssim_num_scales(s) for s in (16, 32, 64, 160, 161, 256)] == [1, 2, 3, 4, 5, 5]
    x = smooth_images(size=16)
    assert ms_ssim(x, x) is None  # a single scale would just be SSIM
    with pytest.raises(ValueError, match="window_size"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_blur_lowers_psnr_ssim_ms_ssim():
    x = smooth_images(size=64, seed=3)
    mild, strong = blur(x, 0.7), blur(x, 2.0)
    assert (psnr(mild, x) > psnr(strong, x)).all()
    assert (ssim(mild, x) > ssim(strong, x)).all()
    assert (ms_ssim(mild, x) > ms_ssim(strong, x)).all()
    assert (ssim(strong, x) < 1).all()


def test_evaluate_reconstruction_of_a_tiny_vae():
    vae = AutoencoderKL(block_out_channels=(8,), latent_channels=2, norm_num_groups=4, sample_size=32).eval()
    metrics = evaluate_reconstruction(vae, smooth_images(batch=3, size=32), batch_size=2)
    assert metrics["num_images"] == 3 and metrics["ms_ssim_scales"] == 2
    assert metrics["mse"] > 0 and np.isfinite(metrics["psnr"]) and -1 <= metrics["ssim"] <= 1
    assert metrics["ms_ssim"] is not None


def test_images_smaller_than_the_ssim_window_get_psnr_and_no_ssim(capsys):
    # 8x8 digits (`builtin:digits?size=8`) are a valid size: their VAE round trip reports PSNR, and SSIM (11x11
    # window) as None like MS-SSIM, instead of failing at the end of train_vae.py / the evaluate command.
    from sdscratch.evaluate import _print_summary
    from sdscratch.evaluation import evaluate_vae, model_card_section

    x = smooth_images(batch=2, channels=1, size=8)
    metrics = reconstruction_metrics(x, (x * 0.9).clamp(-1, 1))
    assert metrics["ssim"] is None and metrics["ms_ssim"] is None and np.isfinite(metrics["psnr"])
    vae = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8,), latent_channels=2, norm_num_groups=4)
    vae.register_to_config(sample_size=8)
    vae_metrics, _ = evaluate_vae(vae.eval(), task="digits", num_images=2)
    assert vae_metrics["reconstruction"]["ssim"] is None
    summary = {"num_images": 2, "seconds_per_image": 0.1, "adherence": {"accuracy": {}}, "adherence_real_images": {}}
    summary.update(frechet_distance={"generated": 1.0, "vae_reconstructions": None, "real_floor": 1.0})
    summary.update(reconstruction=vae_metrics["reconstruction"], scheduler_name="dpm++")
    _print_summary(summary)
    assert "SSIM n/a, MS-SSIM n/a (0 scales)" in capsys.readouterr().out
    assert "SSIM n/a." in model_card_section(summary, "command")
    assert "left open" not in model_card_section(summary, "command")  # no unnamed attributes: no table
    summary["unnamed_attributes"] = {
        "eye_color": {"total_variation": 0.273, "generated": {"blue": 0.1, "green": 0.5}, "real_images": {"blue": 0.3, "green": 0.23}, "count": 310},
    }  # fmt: skip
    assert "| eye_color | 310 | 0.273 | green 50% / 23% |" in model_card_section(summary, "command")


# ---------------------------------------------------------------- Frechet distance


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 8))
    assert frechet_distance_from_features(features, features) < 1e-6
    # Equal covariances: the distance is the squared distance of the means.
    mu = rng.normal(size=4)
    assert frechet_distance(np.zeros(4), np.eye(4), mu, np.eye(4)) == pytest.approx(float(mu @ mu))
    # Diagonal covariances: sum of (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(np.zeros(4), np.diag(a), np.zeros(4), np.diag(b)) == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def face_classifier():
    return load_classifier("cartoon-faces")


def test_nan_features_and_images_are_named_not_a_scipy_error(face_classifier):
    features = np.random.default_rng(0).normal(size=(10, 4))
    features[3, 1] = np.nan
    with pytest.raises(ValueError, match="features of 1 of 10 samples are NaN or infinite"):
        frechet_distance_from_features(features, features)
    images = np.full((2, 64, 64, 3), 0.5, dtype=np.float32)
    images[1, 0, 0, 0] = np.nan  # a diverged model's image: classified as value 0 before
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        face_classifier.classify(images)
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        face_classifier.classify(torch.full((1, 3, 64, 64), float("nan")))


def test_blurred_faces_are_further_than_real_ones(face_classifier):
    attributes = balanced_face_attributes(150, seed=7)
    reference = render_faces(attributes, dataset_seed=70)
    other = render_faces(balanced_face_attributes(150, seed=8), dataset_seed=80)
    _, f_reference = face_classifier.classify(reference)
    _, f_other = face_classifier.classify(other)
    _, f_blurred = face_classifier.classify(blur(other, 1.5))
    assert frechet_distance_from_features(f_reference, f_reference) < 1e-6
    floor = frechet_distance_from_features(f_other, f_reference)
    assert frechet_distance_from_features(f_blurred, f_reference) > 1.3 * floor  # measured: 1.65x


# ---------------------------------------------------------------- classifiers


def test_classifier_save_load_round_trip(tmp_path):
    model = AttributeClassifier(
        labels={"a": ["x", "y"], "b": ["0", "1", "2"]}, sample_size=16, block_out_channels=(8, 16)
    )
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = load_classifier(tmp_path)
    x = smooth_images(size=16)
    out, out_loaded = model(x), loaded(x)
    assert out.logits["b"].shape == (2, 3) and out.features.shape == (2, 16)
    assert torch.allclose(out.logits["a"], out_loaded.logits["a"]) and torch.allclose(
        out.features, out_loaded.features
    )
    predictions, features = loaded.classify(x, batch_size=1)
    assert set(loaded.decode_predictions(predictions)[0]) == {"a", "b"} and features.shape == (2, 16)
    with pytest.raises(ValueError, match="labels"):
        AttributeClassifier(labels={"a": ["only"]})


def test_shipped_face_classifier_reads_caption_attributes(face_classifier):
    # 200 faces never seen in training (dataset seed 1002; training used 1000, its held-out set 1001).
    images, labels = labelled_faces(200, dataset_seed=1002)
    assert face_classifier.dtype == torch.float32
    predictions, _ = face_classifier.classify(uint8_to_float(images))
    names = list(ATTRIBUTES)
    for name in CAPTION_ATTRIBUTES:
        accuracy = (predictions[name] == labels[:, names.index(name)]).float().mean().item()
        assert accuracy >= 0.99, (name, accuracy)


def test_shipped_digit_classifier_reads_real_digits():
    classifier = load_classifier("digits")
    images, labels = labelled_digits("test")
    predictions, _ = classifier.classify(uint8_to_float(images))
    assert (predictions["digit"] == labels[:, 0]).float().mean().item() >= 0.95


def test_train_classifier_script_runs(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "train_classifier", os.path.join(REPO, "training", "train_classifier.py")
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    metrics = script.main(["--task", "cartoon-faces", "--output_dir", str(tmp_path), "--num_train_images", "32",
                           "--num_eval_images", "16", "--num_epochs", "1", "--train_batch_size", "16"])  # fmt: skip
    assert set(metrics["held_out_accuracy"]) == set(ATTRIBUTES)
    assert os.path.isfile(tmp_path / "config.json") and os.path.isfile(tmp_path / "training_metrics.json")
    assert load_classifier(tmp_path).config.labels["skin"] == list(ATTRIBUTES["skin"])


def test_digit_classifier_refuses_images_in_the_wrong_layout():
    """NCHW numpy or NHWC tensors: the 1-channel classifier averaged their 16 rows as channels and read 0-5% right."""
    classifier = load_classifier("digits")
    images = uint8_to_float(labelled_digits("test")[0][:4])  # (4, 1, 16, 16) in [-1, 1]
    with pytest.raises(ValueError, match=r"images have 16 channels \(read as \(N, H, W, C\)\)"):
        classifier.classify(((images + 1) / 2).numpy())
    with pytest.raises(ValueError, match=r"images have 16 channels \(read as \(N, C, H, W\)\)"):
        classifier.classify(images.permute(0, 2, 3, 1))
    assert classifier.classify(images.repeat(1, 3, 1, 1))[0]["digit"].shape == (4,)  # RGB still reads as grey


def test_train_classifier_refuses_an_output_dir_under_a_file(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "train_classifier", os.path.join(REPO, "training", "train_classifier.py")
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="--output_dir .* cannot be a folder: .*afile' is a file"):  # after training
        script.main(["--task", "digits", "--output_dir", str(tmp_path / "afile" / "sub")])


def test_metrics_refuse_nan_pixels_and_frechet_refuses_bad_statistics():
    x = torch.zeros(2, 3, 64, 64)  # large enough for MS-SSIM's scales
    y = x.clone()
    y[0, 0, 0, 0] = float("nan")
    for metric in (psnr, ssim, ms_ssim):
        with pytest.raises(ValueError, match="NaN"):  # they returned NaN
            metric(y, x)
    with pytest.raises(ValueError, match=r"means must be \(dim,\) and covariances \(dim, dim\)"):  # read 0.0
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN or infinite"):  # returned nan
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


# ---------------------------------------------------------------- adherence


def test_adherence_prompts_cover_every_value():
    pairs = build_adherence_prompts(40, caption_style="template", seed=0)
    assert len(pairs) == 40 and pairs == build_adherence_prompts(40, caption_style="template", seed=0)
    for name in ("hair_color", "skin"):
        assert {targets[name] for _, targets in pairs} == set(ATTRIBUTES[name])
    assert {targets["glasses"] for _, targets in pairs} == {"none", ANY}
    assert all(parse_caption(prompt) == targets for prompt, targets in pairs)
    rich = build_adherence_prompts(300, caption_style="rich", seed=0)
    for name, values in ATTRIBUTES.items():
        named = {targets[name] for _, targets in rich if name in targets} - {ANY}
        assert named == set(values), name
    digits = build_adherence_prompts(20, task="digits")
    assert [p for p, _ in digits[:10]] == [str(d) for d in range(10)] and digits[13][1] == {"digit": "3"}


def test_adherence_from_predictions_counts_any_and_none():
    targets = [{"glasses": ANY, "skin": "dark"}, {"glasses": "none", "skin": "white"}, {"glasses": ANY}]
    predicted = [{"glasses": "round", "skin": "dark"}, {"glasses": "square", "skin": "white"}, {"glasses": "none"}]
    result = adherence_from_predictions(predicted, targets)
    assert result["accuracy"] == {"glasses": pytest.approx(1 / 3), "skin": 1.0}
    assert result["count"] == {"glasses": 3, "skin": 2}
    assert result["per_value_accuracy"]["glasses"] == {ANY: 0.5, "none": 0.0}
    assert result["all_correct"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------- the evaluate command


def test_evaluate_command_on_a_tiny_pipeline(tmp_path, capsys):
    from sdscratch import CartoonFacePipeline, SmallUNet, SmallVAE
    from sdscratch.evaluate import main
    from sdscratch.pipelines.pipeline_utils import make_scheduler
    from sdscratch.text import build_text_encoder, build_tokenizer

    tokenizer = build_tokenizer([prompt for prompt, _ in build_adherence_prompts(50)], model_max_length=20)
    vae = SmallVAE(block_out_channels=(8, 16), norm_num_groups=8, sample_size=16, latent_channels=4)
    unet = SmallUNet(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                     transformer_levels=(False, True), attention_head_dim=8, norm_num_groups=8, cross_attention_dim=16)  # fmt: skip
    text_encoder = build_text_encoder(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)  # fmt: skip
    pipeline = CartoonFacePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=make_scheduler()
    )
    pipeline.save_pretrained(tmp_path / "pipe")

    out = tmp_path / "eval"
    args = ["--model_path", str(tmp_path / "pipe"), "--output_dir", str(out), "--num_images", "6",
            "--num_inference_steps", "2", "--batch_size", "4", "--guidance_scale", "2", "--grid_images", "4"]  # fmt: skip
    metrics = main(args)
    with open(out / "metrics.json") as f:
        saved = json.load(f)
    assert saved["adherence"]["accuracy"] == metrics["adherence"]["accuracy"]
    # "without glasses" also targets glasses_color "none" (parse_caption)
    assert set(CAPTION_ATTRIBUTES) <= set(saved["adherence"]["accuracy"]) <= set(ATTRIBUTES)
    fd = saved["frechet_distance"]
    assert fd["num_images"] == 6 and all(
        np.isfinite(fd[k]) for k in ("generated", "real_floor", "vae_reconstructions")
    )
    assert saved["reconstruction"]["ms_ssim"] is None and saved["reconstruction"]["psnr"] > 0  # 16x16: 1 scale
    assert saved["scheduler"] == "DPMSolverMultistepScheduler" and saved["image_size"] == 16
    # what the template prompts leave open (hair style, eye colour, ...): in metrics.json and one line each
    printed = capsys.readouterr().out
    for name, balance in saved["unnamed_attributes"].items():
        assert 0 <= balance["total_variation"] <= 1 and 1 <= balance["count"] <= 6
        assert f"unnamed {name:>16}: total variation {balance['total_variation']:.3f}" in printed
    assert saved["unnamed_attributes"]["hair_style"]["count"] == 6  # no template prompt names it
    separation = saved["text_encoder_separation"]
    assert set(separation["separation"]) == set(separation["random_init_separation"]) == set(ATTRIBUTES)
    assert all(value > 0 for value in separation["separation"].values())
    from PIL import Image

    assert Image.open(out / "grid.png").size[0] == 4 * (128 + 4)

    # the VAE alone (train_vae.py's layout: <run>/vae/config.json): the same VAE numbers, with no UNet
    vae.save_pretrained(tmp_path / "vae-run" / "vae")
    vae_out = tmp_path / "eval-vae"
    args = ["--model_path", str(tmp_path / "vae-run"), "--output_dir", str(vae_out), "--num_images", "6",
            "--batch_size", "4", "--grid_images", "4"]  # fmt: skip
    alone = main(args)
    with open(vae_out / "metrics.json") as f:
        assert json.load(f)["reconstruction"] == alone["reconstruction"]
    assert alone["model_type"] == "SmallVAE" and "adherence" not in alone
    assert alone["adherence_vae_reconstructions"] == saved["adherence_vae_reconstructions"]
    assert alone["reconstruction"] == pytest.approx(saved["reconstruction"])
    for key in ("vae_reconstructions", "real_floor"):
        assert alone["frechet_distance"][key] == pytest.approx(fd[key])
    assert Image.open(vae_out / "grid.png").size[0] == 4 * (128 + 4)
    with pytest.raises(ValueError, match="--model_card"):
        main(args + ["--model_card"])
    with pytest.raises(ValueError, match="--model_path .* neither a pipeline folder"):
        main(["--model_path", str(tmp_path / "eval"), "--output_dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_evaluate_command_on_a_tiny_pixel_space_digits_pipeline(tmp_path):
    from sdscratch import CartoonFacePipeline, SmallUNet
    from sdscratch.evaluate import main
    from sdscratch.evaluation.classifier import pretrained_classifier_path
    from sdscratch.pipelines.pipeline_utils import make_scheduler
    from sdscratch.text import build_text_encoder, build_tokenizer

    prompts = [prompt for prompt, _ in build_adherence_prompts(60, task="digits", caption_style="rich")]
    tokenizer = build_tokenizer(prompts, model_max_length=8)
    unet = SmallUNet(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                     transformer_levels=(False, True), attention_head_dim=8, norm_num_groups=8, cross_attention_dim=16)  # fmt: skip
    text_encoder = build_text_encoder(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)  # fmt: skip
    pipeline = CartoonFacePipeline(vae=None, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=make_scheduler())  # fmt: skip
    pipeline.save_pretrained(tmp_path / "pipe")

    out = tmp_path / "eval"
    metrics = main(["--model_path", str(tmp_path / "pipe"), "--output_dir", str(out), "--task", "digits",
                    "--num_images", "12", "--num_inference_steps", "2", "--batch_size", "6", "--scheduler", "saved",
                    "--caption_style", "rich", "--classifier_path", pretrained_classifier_path("digits")])  # fmt: skip
    assert set(metrics["adherence"]["accuracy"]) == {"digit"} and metrics["adherence"]["count"]["digit"] == 12
    assert metrics["adherence_real_images"]["digit"] >= 0.95  # real held-out digits
    assert metrics["reconstruction"] is None and metrics["frechet_distance"]["vae_reconstructions"] is None
    assert metrics["frechet_distance"]["num_images"] == 12 and metrics["image_size"] == 16
    assert metrics["classifier_held_out_accuracy"]["digit"] >= 0.97
    assert os.path.isfile(out / "grid.png") and os.path.isfile(out / "metrics.json")

    # --model_card writes the numbers into the folder's README.md, and a second run replaces (not appends) them
    (tmp_path / "pipe" / "README.md").write_text("---\nlibrary_name: diffusers\n---\n\n# digits\n\n## Training\n\nx\n")
    for _ in range(2):
        main(["--model_path", str(tmp_path / "pipe"), "--output_dir", str(out), "--task", "digits",
              "--num_images", "10", "--num_inference_steps", "1", "--batch_size", "10", "--scheduler", "saved",
              "--model_card"])  # fmt: skip
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert card.count("## Evaluation") == 1 and "## Training" in card and card.startswith("---\nlibrary_name")
    assert "| digit |" in card and "python -m sdscratch.evaluate --model_path" in card
    assert "text encoder separation (fresh encoder)" in card
    assert set(metrics["text_encoder_separation"]["separation"]) == {"digit"}
    assert (tmp_path / "pipe" / "evaluation_grid.png").is_file()
    assert not list((tmp_path / "pipe").glob("*.tmp"))
    # free-form prompts get their own section and grid; re-running either replaces only its own
    for style in ("rich", "rich", "template"):
        main(["--model_path", str(tmp_path / "pipe"), "--output_dir", str(out), "--task", "digits",
              "--num_images", "10", "--num_inference_steps", "1", "--batch_size", "10", "--scheduler", "saved",
              "--caption_style", style, "--model_card"])  # fmt: skip
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert card.count("\n## Evaluation\n") == 1 and card.count("\n## Evaluation with free-form prompts\n") == 1
    assert "(caption style `rich`)" in card and "(caption style `template`)" in card
    assert (tmp_path / "pipe" / "evaluation_grid_free_form.png").is_file()


# ---------------------------------------------------------------- input ranges and dtypes


def test_reconstruction_metrics_read_uint8_as_0_255_and_check_value_range():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 16, 16), generator=g, dtype=torch.uint8)
    y = (x.int() + torch.randint(-8, 9, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    expected = 10 * torch.log10(255.0**2 / (x.double() - y.double()).pow(2).flatten(1).mean(1))  # skimage's PSNR
    assert torch.allclose(psnr(x, y).double(), expected, atol=1e-4)
    assert torch.allclose(psnr(x, y), psnr(uint8_to_float(x), uint8_to_float(y)), atol=1e-4)
    assert torch.equal(psnr(x, y, value_range=(0, 255)), psnr(x, y))
    assert torch.allclose(ssim(x, y), ssim(uint8_to_float(x), uint8_to_float(y)), atol=1e-6)
    for value_range in [(1, 1), (1, -1), (0, float("inf"))]:
        with pytest.raises(ValueError, match="value_range must be two finite numbers with low < high"):
            psnr(x, y, value_range=value_range)
    with pytest.raises(ValueError, match=r"outside value_range=\(-1, 1\)"):
        psnr(x.float(), y.float())  # [0, 255] floats read as the default [-1, 1]
    with pytest.raises(ValueError, match=r"outside value_range=\(0, 1\)"):
        ssim(uint8_to_float(x), uint8_to_float(y), value_range=(0, 1))


def test_classifier_reads_uint8_and_rejects_floats_out_of_range(face_classifier):
    images, labels = labelled_faces(40, dataset_seed=1002)
    reference, reference_features = face_classifier.classify(uint8_to_float(images))
    from_uint8, features = face_classifier.classify(images)
    assert torch.equal(features, reference_features)
    from_numpy, numpy_features = face_classifier.classify(images.permute(0, 2, 3, 1).numpy())
    assert torch.allclose(numpy_features, reference_features, atol=1e-4)
    names = list(ATTRIBUTES)
    for name in CAPTION_ATTRIBUTES:
        assert torch.equal(from_uint8[name], reference[name]) and torch.equal(from_numpy[name], reference[name])
        assert (from_uint8[name] == labels[:, names.index(name)]).float().mean().item() >= 0.95
    with pytest.raises(ValueError, match=r"tensor images .* floats in \[-1, 1\]; got values in \[10, 255\]"):
        face_classifier.classify(images.float())
    with pytest.raises(ValueError, match=r"numpy images .* floats in \[0, 1\]; got values in \[-0.92"):
        face_classifier.classify(uint8_to_float(images).permute(0, 2, 3, 1).numpy())


# ---------------------------------------------------------------- the evaluate command's flags and outputs


@pytest.mark.parametrize(
    "flags, error",
    [
        (["--num_images", "1"], "--num_images must be >= 2"),
        (["--grid_images", "-1"], "--grid_images must be >= 1, or 0 for no grid"),
        (["--grid_images", "0", "--model_card"], "--model_card puts grid.png in the card"),
        (["--task", "digits", "--caption_style", "mixed"], "--caption_style 'mixed' is not one of the digits styles"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--scheduler", "dpm+"], "--scheduler: `scheduler` 'dpm+' is not DDPM-compatible"),
        (["--seed", "-5000"], "--seed must be >= 0, got -5000"),  # reference faces = data set 10000 + 2 * seed
        (["--classifier_path", "no/such/folder"], "--classifier_path 'no/such/folder' is no classifier folder"),
    ],
)
def test_evaluate_flags_are_checked_before_any_work(tmp_path, capsys, flags, error):
    from sdscratch.evaluate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out"), *flags])
    assert exit_info.value.code == 2 and error in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("output_dir", ["taken", "taken/eval", ""])
def test_evaluate_refuses_an_output_dir_that_is_or_lies_under_a_file(tmp_path, capsys, output_dir):
    """It failed in os.makedirs (FileExistsError / NotADirectoryError) after the whole evaluation had run."""
    from sdscratch.evaluate import main

    (tmp_path / "taken").write_text("a file")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--model_path",
                str(tmp_path / "missing"),
                "--output_dir",
                str(tmp_path / output_dir) if output_dir else "",
            ]
        )
    error = "taken' is a file" if output_dir else "--output_dir must name a folder, got ''"  # '': after the evaluation
    assert exit_info.value.code == 2 and error in capsys.readouterr().err


def test_evaluate_functions_check_num_images_and_styles_first():
    from sdscratch.evaluation import evaluate_pipeline, evaluate_vae

    with pytest.raises(ValueError, match="num_images must be >= 2"):
        evaluate_pipeline(None, num_images=1)  # raises before touching the pipeline
    with pytest.raises(ValueError, match="num_images must be >= 2"):
        evaluate_vae(None, num_images=1)
    with pytest.raises(ValueError, match=r"caption_style must be one of \('template', 'rich'\) for task='digits'"):
        build_adherence_prompts(10, task="digits", caption_style="mixed")


def test_a_grayscale_pipeline_is_refused_for_the_cartoon_faces_task(tmp_path, monkeypatch):
    from sdscratch.demo import tiny_random_pipeline
    from sdscratch.evaluate import main
    from sdscratch.evaluation import evaluate_pipeline

    pipeline = tiny_random_pipeline(name="digits")
    monkeypatch.setattr(type(pipeline), "__call__", lambda *a, **k: pytest.fail("generated images"))
    with pytest.raises(ValueError, match=r"task='cartoon-faces' reads coloured faces.*--task digits"):
        evaluate_pipeline(pipeline, num_images=2)
    # the command with --task left at its default: refused before any image, file or card is written
    pipeline.save_pretrained(tmp_path / "digits")
    (tmp_path / "digits" / "README.md").write_text("# digits\n")
    with pytest.raises(ValueError, match="--task digits"):
        main(["--model_path", str(tmp_path / "digits"), "--output_dir", str(tmp_path / "out"), "--model_card"])
    assert not (tmp_path / "out").exists() and (tmp_path / "digits" / "README.md").read_text() == "# digits\n"


def test_metrics_are_written_before_the_grid(tmp_path, monkeypatch):
    import argparse

    from sdscratch import evaluate

    outputs = {"images": np.zeros((2, 16, 16, 3), dtype=np.float32), "prompts": ["a", "b"],
               "targets": [{}, {}], "predictions": [{}, {}]}  # fmt: skip

    def broken_grid(*args, **kwargs):
        raise RuntimeError("grid failed")

    monkeypatch.setattr(evaluate, "captioned_grid", broken_grid)
    args = argparse.Namespace(output_dir=str(tmp_path / "out"), grid_images=2)
    with pytest.raises(RuntimeError, match="grid failed"):
        evaluate._write_outputs(args, {"psnr": 30.0}, outputs)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"psnr": 30.0, "grid": "grid.png"}
    args = argparse.Namespace(output_dir=str(tmp_path / "no-grid"), grid_images=0)
    evaluate._write_outputs(args, {"psnr": 30.0}, outputs)  # no grid: captioned_grid is never called
    assert json.loads((tmp_path / "no-grid" / "metrics.json").read_text()) == {"psnr": 30.0, "grid": None}
    assert sorted(os.listdir(tmp_path / "no-grid")) == ["metrics.json"]


def test_names_moved_out_of_the_evaluate_command_are_still_importable_from_it():
    # evaluate_pipeline / evaluate_vae live in evaluation/pipeline_evaluation.py, the card in evaluation/model_card.py
    from sdscratch import evaluate, evaluation
    from sdscratch.evaluation import model_card, pipeline_evaluation

    for name in ("evaluate_pipeline", "evaluate_vae"):
        assert getattr(evaluate, name) is getattr(evaluation, name) is getattr(pipeline_evaluation, name)
    for name in ("model_card_section", "update_model_card", "EVALUATION_SECTIONS"):
        assert getattr(evaluate, name) is getattr(model_card, name)


def test_card_update_keeps_a_non_ascii_card_utf8_on_windows(tmp_path, windows_text_encoding):
    """Python on Windows opens text as cp1252 unless told otherwise: the card (UTF-8, written by huggingface_hub)
    failed to read with a Japanese prompt, and a path like C:\\Users\\Zoë in the command was written as cp1252
    into it, after which `sdscratch generate --model` could not read the card's prompt any more."""
    from huggingface_hub import ModelCard
    from PIL import Image

    from sdscratch.demo import card_validation_prompt
    from sdscratch.evaluation.model_card import replace_card_section

    ModelCard("---\nlicense: mit\n---\n\n# run\n\nPrompts, left to right: `こんにちは`\n").save(tmp_path / "README.md")
    Image.new("RGB", (4, 4)).save(tmp_path / "grid-source.png")
    section = "## Evaluation\n\n```bash\npython -m sdscratch.evaluate --model_path C:\\Users\\Zoë\\model\n```\n"
    replace_card_section(str(tmp_path), "## Evaluation", section, str(tmp_path / "grid-source.png"), "grid.png")
    card = (tmp_path / "README.md").read_bytes().decode("utf-8")
    assert "`こんにちは`" in card and "C:\\Users\\Zoë\\model" in card
    assert card_validation_prompt(tmp_path) == "こんにちは"


def test_shipped_face_classifier_reads_every_attribute_the_faces_are_drawn_with(face_classifier):
    # every attribute, not only the caption ones: a face drawn with the wrong eye colour, mouth or face shape is a
    # face whose rich caption names what it does not show (eye colour only where no sunglasses hide the eyes)
    images, labels = labelled_faces(100, dataset_seed=1002)
    predictions, _ = face_classifier.classify(uint8_to_float(images))
    names = list(ATTRIBUTES)
    visible_eyes = labels[:, names.index("glasses")] != ATTRIBUTES["glasses"].index("sunglasses")
    for name in names:
        correct = predictions[name] == labels[:, names.index(name)]
        accuracy = (correct[visible_eyes] if name == "eye_color" else correct).float().mean().item()
        assert accuracy >= 0.97, (name, accuracy)


def test_feature_statistics_are_the_mean_and_unbiased_covariance():
    features = np.random.default_rng(1).normal(size=(7, 3))
    mu, sigma = feature_statistics(torch.from_numpy(features).float())
    centred = features - features.sum(axis=0) / 7
    assert np.allclose(mu, features.sum(axis=0) / 7, atol=1e-6)
    assert np.allclose(sigma, centred.T @ centred / 6, atol=1e-6)  # n - 1


def test_frechet_distance_of_non_commuting_covariances():
    # Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)), the symmetric form, by eigendecomposition: an
    # independent route to the formula, exact where S1 and S2 do not commute (diagonal / equal ones hide that)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)

    def psd_sqrt(m):
        values, vectors = np.linalg.eigh(m)
        return vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T

    root1 = psd_sqrt(sigma1)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2) - 2 * np.trace(psd_sqrt(root1 @ sigma2 @ root1))
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


def test_psnr_of_a_batch_is_the_mean_of_per_image_psnr():
    x = torch.zeros(2, 3, 16, 16)
    y = torch.stack([x[0] + 0.2, x[1] + 0.4])  # [0, 1] errors 0.1 and 0.2: 20 dB and 13.98 dB
    metrics = reconstruction_metrics(y, x)
    assert metrics["psnr"] == pytest.approx((20 + 10 * np.log10(1 / 0.04)) / 2, abs=1e-4)
    assert metrics["psnr_of_mean_mse"] == pytest.approx(10 * np.log10(1 / 0.025), abs=1e-4)
    assert metrics["mse"] == pytest.approx(0.025, abs=1e-7)


def test_ms_ssim_of_odd_sizes_and_inverted_images():
    # odd sides are padded when halved (ceil, as `ms_ssim_num_scales` counts): 21 -> 11 holds the window at 2 scales
    x = smooth_images(size=24, seed=6)[..., :21, :21]
    assert ms_ssim_num_scales(21) == 2 and torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-6)
    # an inverted image has a negative contrast-structure term: clamped to 0, not a NaN from a fractional power
    assert torch.equal(ms_ssim(x, -x), torch.zeros(2))


def test_classifier_reads_pil_images_in_train_mode_as_tensors_in_eval_mode(face_classifier):
    from sdscratch.data.cartoon_faces import generate_face

    pil = [generate_face(seed, size=64)[0] for seed in range(4)]
    as_uint8 = torch.from_numpy(np.stack([np.asarray(image) for image in pil])).permute(0, 3, 1, 2)
    _, reference = face_classifier.classify(as_uint8)
    _, from_pil = face_classifier.classify(pil)
    assert torch.allclose(from_pil, reference, atol=1e-5)
    face_classifier.train()  # classify measures in eval mode (BatchNorm's running statistics) and restores train
    try:
        _, in_train_mode = face_classifier.classify(as_uint8)
        assert face_classifier.training and torch.equal(in_train_mode, reference)
    finally:
        face_classifier.eval()


def test_classifier_reads_a_list_of_pil_images_of_several_sizes_and_names_a_bad_batch_size(face_classifier):
    # prepare_images resizes "other sizes": a list mixing sizes failed in np.stack ("all input arrays must have the
    # same shape"), and batch_size=0 with "range() arg 3 must not be zero"
    from sdscratch.data.cartoon_faces import generate_face

    images = [generate_face(4, size=48)[0], generate_face(5, size=64)[0]]
    _, features = face_classifier.classify(images)
    alone = torch.cat([face_classifier.classify([image])[1] for image in images])
    # batch of 2 vs 1: other conv blockings round features of up to 7 differently (1.7e-6 here); swapped images: 7
    assert torch.allclose(features, alone, rtol=1e-4, atol=1e-5)
    for batch_size in (0, 2.5):
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {batch_size}"):
            face_classifier.classify(images, batch_size=batch_size)


def test_grey_classifier_averages_rgb_channels():
    from sdscratch.evaluation.classifier import prepare_images

    rgb = torch.stack([torch.full((4, 4), v) for v in (-0.6, 0.0, 0.9)])[None]  # (1, 3, 4, 4)
    assert torch.allclose(prepare_images(rgb, in_channels=1, size=4), torch.full((1, 1, 4, 4), 0.1), atol=1e-6)


def test_each_image_has_its_own_seed_whatever_the_batch_size():
    from sdscratch.evaluation.adherence import generate_images

    class SeedEcho:  # draws one number per image from its generator: the image reads its seed back
        def __call__(self, prompt, generator, num_inference_steps, output_type):
            return SimpleNamespace(
                images=np.stack([np.full((2, 2, 3), torch.rand(1, generator=g).item()) for g in generator])
            )

    prompts = [f"p{i}" for i in range(5)]
    expected = [torch.rand(1, generator=torch.Generator().manual_seed(3 * 1_000_003 + i)).item() for i in range(5)]
    for batch_size in (1, 2, 5):
        images = generate_images(SeedEcho(), prompts, num_inference_steps=1, seed=3, batch_size=batch_size)
        assert np.allclose(images[:, 0, 0, 0], expected), batch_size


@pytest.mark.parametrize("seed", [0, 1])
def test_prompts_and_perfect_faces_are_the_same_faces_and_the_reference_set_another(seed):
    # evaluate_pipeline scores the generator's own faces ("perfect model") against the prompts' targets: both must
    # come from the same attribute sets (dataset seed 10000 + 2 * seed), the FD reference from 10000 + 2 * seed + 1
    from sdscratch.data.cartoon_faces import attributes_match, face_seed, render_face
    from sdscratch.evaluation.references import evaluation_face_sets

    pairs = build_adherence_prompts(12, seed=seed)
    sets = evaluation_face_sets(12, seed=seed, size=32)
    assert all(all(attributes_match(a, t).values()) for a, (_, t) in zip(sets["prompt_attributes"], pairs))
    reference_seed = 10000 + 2 * seed + 1
    reference = balanced_face_attributes(12, seed=reference_seed)
    assert reference != sets["prompt_attributes"]
    drawn = [render_face(a, size=32, seed=face_seed(reference_seed, i)) for i, a in enumerate(reference)]
    assert torch.equal(sets["reference_faces"], uint8_to_float(torch.from_numpy(np.stack(drawn)).permute(0, 3, 1, 2)))


def test_balanced_face_attributes_balance_every_value_and_half_none():
    faces = balanced_face_attributes(60, seed=3)
    for name, values in ATTRIBUTES.items():
        counts = {v: sum(f[name] == v for f in faces) for v in values}
        if name in ("glasses", "facial_hair"):  # "none" half of the faces, every kind equally often in the rest
            assert counts["none"] == 30 and {counts[v] for v in values[1:]} == {10}, (name, counts)
        elif name == "glasses_color":
            assert counts["none"] == 30 and all(counts[v] > 0 for v in values[1:]), counts
        else:
            assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)  # 60 / 9 hair styles: 6 or 7
    assert all((f["glasses"] == "none") == (f["glasses_color"] == "none") for f in faces)


def test_digit_reference_halves_are_disjoint_and_labelled():
    from sdscratch.evaluation.references import split_digits_reference

    images, labels = labelled_digits("test")
    label_of = {uint8_to_float(image).numpy().tobytes(): int(label) for image, label in zip(images, labels[:, 0])}
    reference, perfect, perfect_labels = split_digits_reference(seed=0)
    assert len(reference) == len(perfect) == len(images) // 2
    reference_keys = {image.numpy().tobytes() for image in reference}
    assert not reference_keys & {image.numpy().tobytes() for image in perfect}
    assert [label_of[image.numpy().tobytes()] for image in perfect] == perfect_labels.tolist()


def test_evaluate_flags_reach_the_evaluation_metrics_json_grid_and_card(tmp_path, monkeypatch, capsys):
    from diffusers import EulerDiscreteScheduler

    from sdscratch import evaluate
    from sdscratch.demo import tiny_random_pipeline

    tiny_random_pipeline().save_pretrained(tmp_path / "pipe")
    calls, grids = [], []

    def fake_evaluate_pipeline(pipeline, **kwargs):
        calls.append({"scheduler": pipeline.scheduler, **kwargs})
        metrics = {"num_images": 3, "adherence": {"accuracy": {"skin": 0.5}, "per_value_accuracy": {}},
                   "adherence_real_images": {"skin": 1.0}, "reconstruction": None, "seconds_per_image": 0.1,
                   "frechet_distance": {"generated": 2.0, "vae_reconstructions": None, "real_floor": 1.0},
                   "per_image_psnr": [30.0, float("inf")]}  # fmt: skip
        outputs = {"images": np.zeros((3, 8, 8, 3), dtype=np.float32), "prompts": ["a", "b", "c"],
                   "targets": [{"skin": "dark"}] * 3,
                   "predictions": [{"skin": "dark"}, {"skin": "white"}, {"skin": "dark"}]}  # fmt: skip
        return metrics, outputs

    def recording_grid(images, captions, columns, highlights):
        grids.append({"captions": captions, "columns": columns, "highlights": highlights})
        return evaluate.captioned_grid.__wrapped__(images, captions, columns, highlights=highlights)

    recording_grid.__wrapped__ = evaluate.captioned_grid
    monkeypatch.setattr(evaluate, "evaluate_pipeline", fake_evaluate_pipeline)
    monkeypatch.setattr(evaluate, "captioned_grid", recording_grid)
    monkeypatch.chdir(tmp_path)  # a relative --model_path is recorded as an absolute one
    argv = ["--model_path", "pipe", "--output_dir", "out", "--num_images", "3", "--num_inference_steps", "2",
            "--guidance_scale", "1.5", "--seed", "7", "--batch_size", "2", "--caption_style", "rich",
            "--scheduler", "euler", "--model_card"]  # fmt: skip
    evaluate.main(argv)
    (call,) = calls
    assert isinstance(call.pop("scheduler"), EulerDiscreteScheduler)
    assert call == {"task": "cartoon-faces", "classifier": call["classifier"], "num_images": 3, "seed": 7,
                    "num_inference_steps": 2, "guidance_scale": 1.5, "batch_size": 2, "caption_style": "rich"}  # fmt: skip
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["model_path"] == str(tmp_path / "pipe") and saved["scheduler_name"] == "euler"
    assert saved["per_image_psnr"] == [30.0, None]  # strict JSON: an infinite PSNR inside a list too
    with open(os.path.join(REPO, "sdscratch/evaluation/weights/cartoon-faces/training_metrics.json")) as f:
        assert saved["classifier_held_out_accuracy"] == json.load(f)["held_out_accuracy"]
    # the grid: every image, misread attributes (and only those) in red
    assert grids == [{"captions": ["a", "b", "c"], "columns": 3, "highlights": [None, "read: skin=white", None]}]
    # the card: the section of the caption style, with this command (its own argv, not pytest's)
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "## Evaluation with free-form prompts" in card and "\n## Evaluation\n" not in card
    assert "python -m sdscratch.evaluate " + " ".join(argv) in card
    assert (tmp_path / "pipe" / "evaluation_grid_free_form.png").is_file()
    # grid.png's default size: 64 generated images, or 16 faces with --edit
    flags = ["--model_path", "pipe", "--output_dir", "out"]
    assert evaluate.parse_args(flags).grid_images == 64
    assert evaluate.parse_args(flags + ["--edit", "inpaint"]).grid_images == 16
    # --classifier_path takes a shipped classifier by task name too, as load_classifier does
    from sdscratch.evaluation.classifier import pretrained_classifier_path

    named = evaluate.parse_args(flags + ["--classifier_path", "digits"]).classifier_path
    assert named == pretrained_classifier_path("digits")


def test_unnamed_attribute_balance_by_hand():
    targets = [{"skin": "white"}, {"skin": "dark"}, {"hair_color": "red"}, {}]
    generated = [
        {"skin": "white", "eye_color": "green", "glasses": "none"},
        {"skin": "white", "eye_color": "green", "glasses": "none"},
        {"skin": "dark", "eye_color": "green", "glasses": "sunglasses"},  # eyes hidden: not counted
        {"skin": "dark", "eye_color": "green", "glasses": "none"},
    ]
    real = [
        {"skin": "white", "eye_color": "blue", "glasses": "none"},
        {"skin": "dark", "eye_color": "green", "glasses": "none"},
        {"skin": "yellow", "eye_color": "brown", "glasses": "none"},
        {"skin": "dark", "eye_color": "gray", "glasses": "sunglasses"},  # eyes hidden: not counted
    ]
    balance = unnamed_attribute_balance(generated, targets, real, targets)
    # skin is left open by prompts 2 and 3 only: generated dark, dark; real yellow, dark
    assert balance["skin"]["count"] == 2
    assert balance["skin"]["generated"] == {"dark": 1.0, "yellow": 0.0}
    assert balance["skin"]["real_images"] == {"dark": 0.5, "yellow": 0.5}
    assert balance["skin"]["total_variation"] == pytest.approx(0.5)
    # eye colour is named by no prompt; generated green x3 (one hidden), real blue, green, brown (one hidden)
    eyes = balance["eye_color"]
    assert eyes["count"] == 4 and eyes["generated"]["green"] == 1.0
    assert eyes["real_images"] == pytest.approx({"blue": 1 / 3, "brown": 1 / 3, "green": 1 / 3})
    assert eyes["total_variation"] == pytest.approx(2 / 3)
    assert balance["glasses"]["total_variation"] == pytest.approx(0.0)  # the same spread: 3 none, 1 sunglasses
    # every prompt names the only attribute (digits): nothing to compare
    assert unnamed_attribute_balance([{"digit": "3"}], [{"digit": "3"}], [{"digit": "8"}], [{"digit": "8"}]) == {}
    # each side filtered by its own captions (digits: the real images are not one per prompt)
    other = unnamed_attribute_balance(generated[:1], [{}], real, [{"skin": "any"}] * 4)
    assert "skin" not in other and other["eye_color"]["generated"] == {"blue": 0.0, "brown": 0.0, "green": 1.0}
    with pytest.raises(ValueError, match="1 real readings for 2 targets"):
        unnamed_attribute_balance(generated[:2], targets[:2], real[:1], targets[:2])


def test_evaluate_pipeline_floor_ratio_default_guidance_and_vae_images(face_classifier):
    from sdscratch.demo import tiny_random_pipeline
    from sdscratch.evaluation import evaluate_pipeline, evaluate_vae
    from sdscratch.evaluation.reconstruction import reconstruct_images
    from sdscratch.evaluation.references import evaluation_face_sets

    pipeline = tiny_random_pipeline()
    kwargs = {"classifier": face_classifier, "num_images": 4, "seed": 3, "batch_size": 4}
    metrics, _ = evaluate_pipeline(pipeline, num_inference_steps=1, **kwargs)
    fd = metrics["frechet_distance"]
    # the floor: the prompts' own faces against the independent reference faces, read by the classifier
    sets = evaluation_face_sets(4, seed=3, size=64)
    perfect, reference = (face_classifier.classify(sets[key])[1] for key in ("prompt_faces", "reference_faces"))
    assert fd["real_floor"] == pytest.approx(frechet_distance_from_features(perfect, reference))
    assert fd["generated_over_vae"] == pytest.approx(fd["generated"] / fd["vae_reconstructions"])
    assert metrics["guidance_scale"] == 3.0  # None: the pipeline's default, read back from the call
    # the unnamed attributes' spread: the generated readings against the prompts' own faces' readings
    _, outputs = evaluate_pipeline(pipeline, num_inference_steps=1, **kwargs)
    real = face_classifier.decode_predictions(face_classifier.classify(sets["prompt_faces"])[0])
    targets = outputs["targets"]
    assert metrics["unnamed_attributes"] == unnamed_attribute_balance(outputs["predictions"], targets, real, targets)
    assert "hair_style" in metrics["unnamed_attributes"]  # template prompts never name it
    assert not set(metrics["unnamed_attributes"]) & {"glasses", "facial_hair", "hair_color", "skin"}  # they always do
    # the VAE alone: its outputs are the reconstructions of those faces, in [0, 1]
    _, outputs = evaluate_vae(pipeline.vae, **kwargs)
    expected = ((reconstruct_images(pipeline.vae, sets["prompt_faces"]) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    np.testing.assert_allclose(outputs["images"], expected.numpy(), atol=1e-6)


def test_a_classifier_of_another_task_is_refused_before_generating(face_classifier, monkeypatch):
    from sdscratch.demo import tiny_random_pipeline
    from sdscratch.evaluation import evaluate_pipeline, evaluate_vae

    pipeline = tiny_random_pipeline(name="digits")
    monkeypatch.setattr(type(pipeline), "__call__", lambda *a, **k: pytest.fail("sampled"))
    # was: every adherence empty and all_correct 1.0, silently
    with pytest.raises(ValueError, match=r"none of the task='digits' attributes \['digit'\]"):
        evaluate_pipeline(pipeline, task="digits", classifier=face_classifier, num_images=2)
    with pytest.raises(ValueError, match=r"classifier reads \['digit'\], none of the task='cartoon-faces'"):
        evaluate_vae(tiny_random_pipeline().vae, classifier=load_classifier("digits"), num_images=2)


@pytest.mark.parametrize(
    "kwargs, error_type, error",
    [
        # the held-out faces are data set 10000 + 2 * seed: seed -5000 measured against the training faces
        ({"seed": -5000}, ValueError, r"seed must be >= 0 \(the held-out faces are data set 10000 \+ 2 \* seed"),
        ({"seed": 1.5}, TypeError, "seed must be an integer, got 1.5"),
        ({"num_images": 2.5}, TypeError, "num_images must be an integer, got 2.5"),  # was: range() TypeError
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),  # was: "range() arg 3 must not be zero"
        ({"batch_size": "4"}, TypeError, "batch_size must be an integer, got '4'"),
    ],
)
def test_evaluate_pipeline_and_vae_name_bad_counts_before_any_work(kwargs, error_type, error, monkeypatch):
    from sdscratch.demo import tiny_random_pipeline
    from sdscratch.evaluation import evaluate_pipeline, evaluate_vae

    pipeline = tiny_random_pipeline()
    monkeypatch.setattr(type(pipeline), "__call__", lambda *a, **k: pytest.fail("sampled"))
    monkeypatch.setattr(
        "sdscratch.evaluation.pipeline_evaluation.load_classifier", lambda *a: pytest.fail("classifier loaded")
    )
    with pytest.raises(error_type, match=error):
        evaluate_pipeline(pipeline, **{"num_images": 2, **kwargs})
    with pytest.raises(error_type, match=error):
        evaluate_vae(pipeline.vae, **{"num_images": 2, **kwargs})


def test_card_sections_replace_only_their_own_heading_line(tmp_path):
    from sdscratch.evaluation.model_card import update_model_card

    grid = tmp_path / "grid.png"
    grid.write_bytes(b"not read")
    (tmp_path / "pipe").mkdir()
    card = tmp_path / "pipe" / "README.md"
    card.write_text("## Evaluation with free-form prompts\n\nfree\n\n## Evaluation\n\nold\n\n## Limitations\n\nmany\n")
    metrics = {"num_images": 2, "scheduler_name": "dpm++", "seconds_per_image": 0.5,
               "adherence": {"accuracy": {"skin": 0.5}}, "adherence_real_images": {"skin": 1.0},
               "frechet_distance": {"generated": 3.0, "vae_reconstructions": None, "real_floor": 1.0}}  # fmt: skip
    update_model_card(str(tmp_path / "pipe"), metrics, "cmd", str(grid))  # "## Evaluation" is a prefix of the first
    text = card.read_text()
    # replaced where it stands: the hand-written section after it stays after it (the evaluations of the shipped
    # card once moved below its Limitations each time they were run again)
    assert text.startswith("## Evaluation with free-form prompts\n\nfree\n\n## Evaluation\n")
    assert text.endswith("\n\n## Limitations\n\nmany\n") and "\n\n\n" not in text
    assert "old" not in text and "| skin | 50.00% | 100.00% | n/a |" in text
    update_model_card(str(tmp_path / "pipe"), metrics, "cmd", str(grid), "rich")  # the card's first line
    text = card.read_text()
    assert text.count("## Evaluation with free-form prompts\n") == 1 and "free\n" not in text
    assert text.startswith("## Evaluation with free-form prompts\n") and text.endswith("\n\n## Limitations\n\nmany\n")
    assert text.index("## Evaluation\n") < text.index("## Limitations\n") and "\n\n\n" not in text
    assert (tmp_path / "pipe" / "evaluation_grid_free_form.png").read_bytes() == b"not read"


def test_grid_clips_values_and_keeps_a_short_last_row():
    from sdscratch.evaluation.grid import captioned_grid

    images = np.stack([np.full((2, 2, 3), 2.0), np.full((2, 2, 3), -1.0), np.full((2, 2, 3), 0.5)])
    grid = captioned_grid(images, columns=2, tile_size=4)
    assert grid.size == (2 * (4 + 4), 2 * 4)  # 3 images in 2 columns: 2 rows
    assert grid.getpixel((0, 0)) == (255, 255, 255) and grid.getpixel((8, 0)) == (0, 0, 0)  # clipped to [0, 1]
    assert grid.getpixel((0, 4)) == (128, 128, 128)  # the third image, alone in the second row
