"""The `sdscratch` command (sdscratch/cli.py): generate with a pipeline folder (the same grid as the examples),
list the shipped models, forward `faces` / `evaluate` to their modules, reject bad flags before loading anything."""

import configparser
import functools
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_examples import run_example

from sdscratch import cli
from sdscratch.demo import tiny_random_pipeline

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "2"]


@pytest.fixture(scope="module")
def faces_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "faces"
    tiny_random_pipeline(seed=0).save_pretrained(folder)
    return str(folder)


def test_generate_writes_the_same_grid_as_the_example(faces_folder, tmp_path, capsys):
    argv = TINY + ["--num_images", "2", "--seed", "3", "--prompt", "Cartoon face with glasses"]
    assert cli.main(["generate", "--model", faces_folder, *argv, "--output", str(tmp_path / "cli.png")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'cli.png'} (2 images for 'Cartoon face with glasses') in " in out
    run_example("generate", argv + ["--model_path", faces_folder, "--output", str(tmp_path / "example.png")])
    cli_grid, example_grid = Image.open(tmp_path / "cli.png"), Image.open(tmp_path / "example.png")
    assert cli_grid.size == (2 * 64 + 2, 64)
    assert cli_grid.tobytes() == example_grid.tobytes()


def test_generate_a_grayscale_folder_gets_the_digits_defaults(tmp_path, capsys):
    folder = tmp_path / "digits"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(folder)
    cli.main(["generate", "--model", str(folder), *TINY, "--num_images", "2", "--output", str(tmp_path / "d.png")])
    assert "(2 images for '8')" in capsys.readouterr().out
    assert Image.open(tmp_path / "d.png").size == (4 * (2 * 16 + 1), 4 * 16)  # 1 px gaps, enlarged 4 times
    run_example(
        "digits", TINY + ["--num_images", "2", "--model_path", str(folder), "--output", str(tmp_path / "e.png")]
    )
    assert Image.open(tmp_path / "d.png").tobytes() == Image.open(tmp_path / "e.png").tobytes()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "no-such-model"], "--model must be one of ['cartoon-faces', 'digits'] or a pipeline folder"),
        (["--num_images", "0"], "--num_images must be at least 1, got 0"),
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--scale", "0"], "--scale must be at least 1, got 0"),
        (
            ["--seed", str(2**64 - 1), "--num_images", "2"],
            "`--seed` must be in [-9223372036854775808, 18446744073709551614]",
        ),
        (["--output", "faces.txt"], "`--output` must end in an image file extension"),
        # formats PIL knows but cannot write a colour grid in: they failed after sampling, with a traceback
        (["--output", "faces.xbm"], "PIL cannot write colour images as XBM"),
        (["--output", "faces.bufr"], "PIL cannot write colour images as BUFR"),
        (["--output", str(ROOT / "README.md" / "faces.png")], "README.md' is a file, not a folder"),
        (["--scheduler", "nope"], "`scheduler` 'nope' is not DDPM-compatible"),
        pytest.param(
            ["--scheduler", "DPMSolverSDEScheduler"],  # a compatible class, but its package is missing: no traceback
            "DPMSolverSDEScheduler requires the torchsde library",
            marks=pytest.mark.skipif(importlib.util.find_spec("torchsde") is not None, reason="torchsde installed"),
        ),
    ],
)
def test_generate_bad_flags_fail_before_loading(argv, message, faces_folder, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not load for a bad flag")

    monkeypatch.setattr("sdscratch.pipelines.pipeline_cartoon_face.CartoonFacePipeline.from_pretrained", no_loading)
    model = [] if "--model" in argv else ["--model", faces_folder]
    with pytest.raises(SystemExit) as raised:
        cli.main(["generate", *model, *argv])
    assert raised.value.code == 2  # argparse's exit status for a usage error, as for an unknown flag
    err = capsys.readouterr().err
    assert err.startswith("sdscratch generate: error: ") and message in err


def test_generate_without_shipped_weights_names_its_own_flag(tmp_path, monkeypatch, capsys):
    def missing(name="cartoon-faces"):
        raise FileNotFoundError(name)

    monkeypatch.setattr("sdscratch.demo.pretrained", missing)
    assert cli.main(["generate", *TINY, "--num_images", "1", "--output", str(tmp_path / "noise.png")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("NOTICE: no shipped weights") and "--model with `sdscratch generate`" in err


def test_generate_a_folder_missing_its_weights_says_so_without_a_traceback(faces_folder, tmp_path, capsys):
    """A pipeline folder (or a Hub id's partly cached snapshot) without a component's weights: diffusers' OSError
    naming the folder, as a one-line error (it was a traceback)."""
    folder = tmp_path / "partial"
    shutil.copytree(faces_folder, folder)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--model", str(folder), *TINY, "--output", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.startswith("sdscratch generate: error: ") and str(folder / "vae") in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("from_python", [True, False])
def test_generate_time_counts_the_process_start_only_on_the_command_line(
    from_python, faces_folder, tmp_path, monkeypatch, capsys
):
    # a long-lived process (a notebook, a test) calling main(argv) must not print its own age as the command's time
    monkeypatch.setattr(cli, "seconds_since_process_start", lambda: 1000.0)
    argv = ["generate", "--model", faces_folder, *TINY, "--num_images", "1", "--output", str(tmp_path / "t.png")]
    monkeypatch.setattr(sys, "argv", ["sdscratch", *argv])
    cli.main(argv if from_python else None)
    seconds = float(capsys.readouterr().out.rsplit(" in ", 1)[1].split()[0])
    assert (seconds < 1000.0) if from_python else (seconds >= 1000.0)


def test_models_lists_every_shipped_model(capsys):
    cli.main(["models"])
    out = capsys.readouterr().out
    for name in ("cartoon-faces", "digits"):
        assert f"{name}: " in out


def test_faces_and_evaluate_are_forwarded_with_their_own_flags(tmp_path, capsys):
    cli.main(["faces", "--output_dir", str(tmp_path / "faces"), "--num_images", "3"])
    assert capsys.readouterr().out.startswith("wrote 3 faces to ")
    assert sorted(p.name for p in (tmp_path / "faces").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
        "metadata.jsonl",
    ]
    with pytest.raises(SystemExit) as raised:
        cli.main(["evaluate", "--help"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.startswith("usage: sdscratch evaluate [-h] --model_path MODEL_PATH")


def test_evaluate_errors_exit_like_generate_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["evaluate", "--model_path", str(tmp_path), "--output_dir", str(tmp_path / "eval")])
    assert raised.value.code == 2
    assert capsys.readouterr().err.startswith(f"sdscratch evaluate: error: --model_path {str(tmp_path)!r} is neither")
    assert not (tmp_path / "eval").exists()


@pytest.mark.skipif(importlib.util.find_spec("torchsde") is not None, reason="torchsde installed")
def test_evaluate_refuses_a_scheduler_whose_package_is_missing(faces_folder, tmp_path, capsys):
    argv = [
        "--model_path",
        faces_folder,
        "--output_dir",
        str(tmp_path / "eval"),
        "--scheduler",
        "DPMSolverSDEScheduler",
    ]
    with pytest.raises(SystemExit) as raised:
        cli.main(["evaluate", *argv])
    assert raised.value.code == 2
    assert "--scheduler: DPMSolverSDEScheduler requires the torchsde library" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_seconds_since_process_start_counts_the_imports():
    first = cli.seconds_since_process_start()
    time.sleep(0.05)
    second = cli.seconds_since_process_start()
    assert first is not None and first > 0  # this process imported torch and diffusers before the test ran
    assert second - first >= 0.03  # /proc's clock ticks: 10 ms


def test_console_script_and_module_entry_points():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert "sdscratch = sdscratch.cli:main" in config["options.entry_points"]["console_scripts"]
    result = subprocess.run([sys.executable, "-m", "sdscratch", "models"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "cartoon-faces: " in result.stdout


def test_generate_from_the_command_line_exits_cleanly(faces_folder, tmp_path):
    # a command-line run (argv from sys.argv) freezes the gc before the interpreter's exit: output and file intact
    output = tmp_path / "cli.png"
    command = [sys.executable, "-m", "sdscratch", "generate", "--model", faces_folder, *TINY, "--num_images", "1"]
    result = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {output} (1 images for ") and Image.open(output).size == (64, 64)


def test_import_prints_nothing():
    # e.g. importing diffusers' Stable Diffusion pipeline module pulls transformers' image processors, which warn
    # about torchvision on stderr: README command 1 must print its one line only
    result = subprocess.run([sys.executable, "-c", "import sdscratch"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""


def test_generate_a_folder_without_prompt_draws_its_cards_validation_prompt(faces_folder, tmp_path, capsys):
    """A model of your own is not asked for the shipped model's cartoon-face prompt: without --prompt, the first
    prompt its training run validated with (its card's "Prompts, left to right" line); else the default one."""
    folder = tmp_path / "mine"
    shutil.copytree(faces_folder, folder)
    argv = ["generate", "--model", str(folder), *TINY, "--num_images", "1", "--output", str(tmp_path / "g.png")]
    assert cli.card_validation_prompt(str(folder)) is None  # no card
    cli.main(argv)
    assert f"images for {cli.DEFAULT_PROMPTS['cartoon-faces']!r}" in capsys.readouterr().out
    (folder / "README.md").write_text("# mine\n\n![grid](g.png)\n\nPrompts, left to right: `a red rose`; `a tulip`\n")
    assert cli.card_validation_prompt(str(folder)) == "a red rose"
    cli.main(argv)
    assert "(1 images for 'a red rose')" in capsys.readouterr().out
    (folder / "README.md").write_text("# mine\n\nNo samples.\n")
    assert cli.card_validation_prompt(str(folder)) is None


@pytest.mark.parametrize("name, example", [("cartoon-faces", "generate"), ("digits", "digits")])
def test_generate_and_the_example_draw_a_folders_card_prompt_alike(name, example, tmp_path, capsys):
    """`sdscratch generate` writes the example's grid for the same flags, also without --prompt for a folder whose
    card names its validation prompts (the examples drew the shipped model's default prompt there)."""
    folder = tmp_path / name
    tiny_random_pipeline(seed=0, name=name).save_pretrained(folder)
    (folder / "README.md").write_text("# mine\n\n![grid](g.png)\n\nPrompts, left to right: `3`; `a tulip`\n")
    argv = [*TINY, "--num_images", "2"]
    cli.main(["generate", "--model", str(folder), *argv, "--output", str(tmp_path / "cli.png")])
    assert "(2 images for '3')" in capsys.readouterr().out
    run_example(example, argv + ["--model_path", str(folder), "--output", str(tmp_path / "example.png")])
    assert Image.open(tmp_path / "cli.png").tobytes() == Image.open(tmp_path / "example.png").tobytes()


@pytest.fixture
def pipeline_calls(monkeypatch):
    """Every `CartoonFacePipeline.__call__` (then run as usual): its prompt and keyword arguments, the generators'
    seeds and the UNet's dtype."""
    from sdscratch.pipelines.pipeline_cartoon_face import CartoonFacePipeline

    calls, original = [], CartoonFacePipeline.__call__

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        seeds = [generator.initial_seed() for generator in kwargs.get("generator") or []]
        calls.append({"prompt": args[0] if args else kwargs.get("prompt"), **kwargs, "seeds": seeds,
                      "dtype": self.unet.dtype})  # fmt: skip
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CartoonFacePipeline, "__call__", spy)
    return calls


def test_generate_flags_reach_the_pipeline_call(faces_folder, tmp_path, pipeline_calls):
    argv = ["generate", "--model", faces_folder, "--prompt", "a face", "--negative_prompt", "glasses", "--steps", "2",
            "--guidance_scale", "1.5", "--seed", "7", "--num_images", "2", "--output", str(tmp_path / "g.png")]  # fmt: skip
    for dtype in ("float32", "bfloat16"):
        cli.main([*argv, "--dtype", dtype])
        call = pipeline_calls.pop()
        assert (call["prompt"], call["negative_prompt"], call["num_inference_steps"]) == ("a face", "glasses", 2)
        assert call["guidance_scale"] == 1.5 and call["num_images_per_prompt"] == 2 and call["seeds"] == [7, 8]
        assert call["dtype"] == getattr(torch, dtype)


def test_generate_digits_defaults_draw_sixteen_digits_enlarged_four_times(tmp_path, pipeline_calls):
    folder = tmp_path / "digits"
    tiny_random_pipeline(seed=0, name="digits").save_pretrained(folder)
    cli.main(["generate", "--model", str(folder), *TINY, "--output", str(tmp_path / "d.png")])
    (call,) = pipeline_calls
    assert call["num_images_per_prompt"] == 16 and call["seeds"] == list(range(16)) and call["guidance_scale"] == 3.0
    assert call["dtype"] == torch.float32  # --dtype auto: float32 for the small digits model
    assert Image.open(tmp_path / "d.png").size == (4 * (4 * 16 + 3),) * 2  # 4 x 4 digits, 1 px gaps, 4 times
