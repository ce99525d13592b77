"""examples/*.py and sdscratch.demo: every example runs end to end with tiny settings and writes its image.

Examples are imported and their `main(argv)` called in-process (imports are paid once); one test runs
`examples/generate.py` as a real subprocess, as README command 1 does.
"""

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sdscratch
from sdscratch.demo import (
    builtin_captions,
    check_output_path,
    check_seed,
    fast_dtype,
    load_pipeline,
    make_grid,
    save_atomic,
    tiny_random_pipeline,
)
from sdscratch.pretrained import is_available

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTICE = "NOTICE: no shipped weights"
TINY = ["--steps", "2"]


def run_example(name: str, argv: list[str]) -> str:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.fixture(autouse=True)
def _no_shipped_weights(monkeypatch):
    """These tests check the fallback path, whether or not this checkout ships weights."""

    def missing(name="cartoon-faces"):
        raise FileNotFoundError(name)

    monkeypatch.setattr("sdscratch.demo.pretrained", missing)


# (example, extra argv, expected size of the written image: W, H) -- 64x64 faces, 2 px gaps; 16x16 digits, 1 px
CASES = [
    ("generate", ["--num_images", "2", "--negative_prompt", "glasses"], (2 * 64 + 2, 64)),
    ("img2img", ["--num_images", "2", "--strength", "0.5"], (3 * 64 + 4, 64)),
    ("inpaint", ["--num_images", "2", "--hair_color", "red"], (4 * 64 + 6, 64)),
    ("interpolate", ["--num_frames", "3", "--seed_b", "1"], (3 * 64 + 4, 64)),
    ("digits", ["--num_images", "2", "--scale", "2", "--scheduler", "euler-maruyama"], (2 * (2 * 16 + 1), 2 * 16)),
    ("denoising_trajectory", ["--num_snapshots", "2"], (2 * 64 + 2, 2 * 64 + 2)),
]


@pytest.mark.parametrize("name,argv,size", CASES, ids=[case[0] for case in CASES])
def test_example_writes_image_and_prints_notice(name, argv, size, tmp_path, capsys):
    output = tmp_path / f"{name}.png"
    path = run_example(name, TINY + argv + ["--output", str(output)])
    captured = capsys.readouterr()
    assert Path(path) == output and output.is_file()
    assert Image.open(output).size == size
    assert NOTICE in captured.err
    assert f"wrote {output}" in captured.out and " s" in captured.out
    assert [p.name for p in tmp_path.iterdir()] == [output.name]  # no temporary file left behind


def test_interpolate_gif(tmp_path, capsys):
    output = tmp_path / "morph.gif"
    run_example("interpolate", TINY + ["--num_frames", "3", "--output", str(output)])
    gif = Image.open(output)
    assert gif.format == "GIF" and gif.size == (64, 64) and gif.n_frames == 4  # 3 frames forth, 1 back


def test_img2img_with_image_file_and_trajectory_with_ddim(tmp_path, capsys):
    sketch = tmp_path / "sketch.png"
    Image.new("RGB", (100, 80), (200, 100, 50)).save(sketch)  # any size: resized to the model's
    run_example("img2img", TINY + ["--num_images", "1", "--image", str(sketch), "--output", str(tmp_path / "a.png")])
    assert Image.open(tmp_path / "a.png").size == (2 * 64 + 2, 64)
    # DDIM returns its own x_0 prediction: the other branch of the trajectory example
    run_example("denoising_trajectory", TINY + ["--scheduler", "ddim", "--output", str(tmp_path / "t.png")])
    assert "columns at timesteps" in capsys.readouterr().out


def test_model_path_loads_saved_pipeline_without_notice(tmp_path, capsys):
    folder = tmp_path / "pipe"
    tiny_random_pipeline(seed=0).save_pretrained(folder)
    argv = TINY + ["--num_images", "2", "--seed", "3"]
    run_example("generate", argv + ["--model_path", str(folder), "--output", str(tmp_path / "loaded.png")])
    assert NOTICE not in capsys.readouterr().err
    run_example("generate", argv + ["--output", str(tmp_path / "random.png")])
    # the saved folder holds the same seeded tiny pipeline as the fallback: identical grids
    assert Image.open(tmp_path / "loaded.png").tobytes() == Image.open(tmp_path / "random.png").tobytes()


def test_generate_cli_subprocess(tmp_path):
    """README command 1, end to end in a fresh interpreter (imports included)."""
    output = tmp_path / "faces.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(EXAMPLES / "generate.py"), "--prompt", "Cartoon face with glasses"]
    result = subprocess.run(
        command + TINY + ["--num_images", "2", "--output", str(output)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (NOTICE in result.stderr) != is_available("cartoon-faces")  # the notice exactly when nothing ships
    assert "wrote" in result.stdout
    assert Image.open(output).size == (2 * 64 + 2, 64)


# ---------------------------------------------------------------- sdscratch.demo


def test_tiny_random_pipeline_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = tiny_random_pipeline(seed=0), tiny_random_pipeline(seed=0), tiny_random_pipeline(seed=1)
    assert torch.equal(torch.rand(1), expected)
    assert torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    assert not torch.equal(a.unet.conv_in.weight, c.unet.conv_in.weight)
    assert a.vae.config.sample_size == 64 and a.vae.downsample_factor * a.unet.config.sample_size == 64
    assert a.scheduler.config.prediction_type == "epsilon" and a.scheduler.config.timestep_spacing
    digits = tiny_random_pipeline(name="digits")
    assert digits.vae is None and digits.unet.config.in_channels == 1


def test_builtin_captions_tokenize_without_unknown_words():
    captions = builtin_captions("cartoon-faces")
    assert len(captions) == len(set(captions)) == 2 * 2 * 10 * 4
    pipe = tiny_random_pipeline()
    ids = pipe.tokenizer(captions[0]).input_ids
    assert len(ids) < pipe.tokenizer.model_max_length  # fits without truncation
    assert "8" in builtin_captions("digits") and "eight" in builtin_captions("digits")
    with pytest.raises(ValueError, match="name"):
        builtin_captions("flowers")


def test_load_pipeline_bad_input(tmp_path, capsys):
    with pytest.raises(ValueError, match="name"):
        load_pipeline(name="flowers")
    with pytest.raises(ValueError, match="model_index.json"):
        load_pipeline(tmp_path)
    pipe = load_pipeline(scheduler="unipc")
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler" and NOTICE in capsys.readouterr().err


def test_fast_dtype_never_picks_float16(monkeypatch):
    assert fast_dtype() in (torch.float32, torch.bfloat16)
    assert fast_dtype("meta") == torch.float32
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert fast_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert fast_dtype(torch.device("cpu")) == torch.bfloat16


def test_generate_dtype_flag(tmp_path):
    """--dtype bfloat16 (the auto choice on bf16 CPUs) draws the same faces as float32, within bf16 rounding."""
    folder = tmp_path / "pipe"
    tiny_random_pipeline(seed=0).save_pretrained(folder)
    grids = {}
    for dtype in ("float32", "bfloat16"):
        output = tmp_path / f"{dtype}.png"
        run_example("generate", TINY + ["--num_images", "1", "--model_path", str(folder), "--dtype", dtype,
                                        "--output", str(output)])  # fmt: skip
        grids[dtype] = torch.tensor(list(Image.open(output).getdata()), dtype=torch.float32)
    assert (grids["float32"] - grids["bfloat16"]).abs().mean() < 8  # of 255
    with pytest.raises(SystemExit):
        run_example("generate", ["--dtype", "float16"])


def test_make_grid_and_save_atomic(tmp_path):
    images = [Image.new("RGB", (8, 8), (i * 30, 0, 0)) for i in range(8)]
    assert make_grid(images).size == (4 * 8 + 3 * 2, 2 * 8 + 2)  # 8 -> 4 x 2
    assert make_grid(images[:3], cols=3, pad=0).size == (24, 8)
    with pytest.raises(ValueError, match="images"):
        make_grid([])
    path = save_atomic(images[0], tmp_path / "sub" / "x.png")
    assert Image.open(path).size == (8, 8) and os.listdir(tmp_path / "sub") == ["x.png"]


def test_pretrained_is_exported():
    assert callable(sdscratch.pretrained) and "cartoon-faces" in sdscratch.PRETRAINED_MODELS


def test_architecture_diagram_script(tmp_path, capsys):
    """docs/make_architecture_diagram.py draws the recipe and any pipeline folder (here a tiny one)."""
    spec = importlib.util.spec_from_file_location("diagram", EXAMPLES.parent / "docs" / "make_architecture_diagram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path / "pipe"
    tiny_random_pipeline().save_pretrained(folder)
    path = module.main(["--model_path", str(folder), "--output", str(tmp_path / "tiny.png")])
    assert Image.open(path).size == (module.WIDTH, module.HEIGHT)
    if not is_available("cartoon-faces"):  # the recipe path (what docs/architecture.png shows before weights ship)
        path = module.main(["--output", str(tmp_path / "recipe.png")])
        assert Image.open(path).size == (module.WIDTH, module.HEIGHT)


@pytest.fixture
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


def test_busy_cores_of_other_processes_subtracts_this_process(monkeypatch):
    from sdscratch import _cpu

    monkeypatch.setattr(_cpu, "_allowed_cpus", lambda: {0, 1})
    since = (100.0, 5.0, 1000, 4000)  # wall, own CPU s, busy ticks, total ticks
    # 1 s later: both cores busy all the time (200 of 200 ticks), this process used 1 CPU second -> 1 other core
    monkeypatch.setattr(_cpu, "cpu_snapshot", lambda: (101.0, 6.0, 1200, 4200))
    assert _cpu.busy_cores_of_other_processes(since) == pytest.approx(1.0)
    # half the ticks idle and all of the busy ones ours -> nobody else
    monkeypatch.setattr(_cpu, "cpu_snapshot", lambda: (101.0, 6.0, 1100, 4200))
    assert _cpu.busy_cores_of_other_processes(since) == pytest.approx(0.0)
    monkeypatch.setattr(_cpu, "cpu_snapshot", lambda: None)
    assert _cpu.busy_cores_of_other_processes(since) is None
    assert _cpu.busy_cores_of_other_processes(None) is None


def test_usable_cores_respects_the_cgroup_cpu_quota(monkeypatch, tmp_path):
    from sdscratch import _cpu

    monkeypatch.setattr(_cpu, "_allowed_cpus", lambda: set(range(8)))
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(_cpu, "CGROUP_CPU_MAX", str(cpu_max))
    assert _cpu.usable_cores() == 8  # no cgroup v2 file (cgroup v1, macOS): the affinity
    for text, cores in [
        ("max 100000\n", 8),  # no quota
        ("200000 100000\n", 2),  # a 2-CPU container on an 8-core host
        ("150000 100000\n", 2),  # 1.5 CPUs: 2 threads keep the quota busy
        ("50000 100000\n", 1),
        ("1600000 100000\n", 8),  # a quota above the affinity: the affinity
        ("garbage\n", 8),
    ]:
        cpu_max.write_text(text)
        assert _cpu.usable_cores() == cores, text
    monkeypatch.setattr(_cpu, "_allowed_cpus", lambda: None)  # no affinity API: os.cpu_count, capped too
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    cpu_max.write_text("300000 100000\n")
    assert _cpu.usable_cores() == 3


def test_busy_cores_on_this_machine():
    from sdscratch import _cpu

    busy = _cpu.busy_cores_of_other_processes()
    if busy is None:
        pytest.skip("/proc/stat is not readable here")
    assert 0.0 <= busy <= (os.cpu_count() or 1)


@pytest.mark.usefixtures("_restore_threads")
def test_set_cpu_threads_leaves_the_cores_others_use(monkeypatch):
    from sdscratch import _cpu
    from sdscratch.demo import set_cpu_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    torch.set_num_threads(2)
    monkeypatch.setattr("os.getloadavg", lambda: (1.5, 1.5, 1.5))  # e.g. right after `pip install`
    monkeypatch.setattr(_cpu, "busy_cores_of_other_processes", lambda: 0.2)
    assert set_cpu_threads() == 2  # an idle machine keeps both, whatever the (lagging) load average says
    monkeypatch.setattr(_cpu, "busy_cores_of_other_processes", lambda: 1.6)
    assert set_cpu_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setattr(_cpu, "busy_cores_of_other_processes", lambda: None)  # no /proc/stat: the load average
    assert set_cpu_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(_cpu, "busy_cores_of_other_processes", lambda: 1.9)
    assert set_cpu_threads() == 2  # the user's explicit setting wins


# ---------------------------------------------------------------- input and output checks

EXAMPLES_WITH_OUTPUT = [
    "generate", "img2img", "inpaint", "interpolate", "digits", "denoising_trajectory", "compare_schedulers",
    "cartoon_faces_grid",
]  # fmt: skip


@pytest.mark.parametrize("name", EXAMPLES_WITH_OUTPUT)
def test_bad_output_fails_before_any_work(name, tmp_path, monkeypatch):
    """`--output noext` or an existing folder is refused, naming --output, before a pipeline is even loaded."""

    def no_work(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before --output was checked")

    monkeypatch.setattr("sdscratch.demo.load_pipeline", no_work)
    monkeypatch.setattr("sdscratch.demo.save_atomic", no_work)
    for output in (tmp_path / "noext", tmp_path):
        with pytest.raises(ValueError, match="--output"):
            run_example(name, ["--output", str(output)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name,argv,flag",
    [
        ("generate", ["--seed", str(2**64 - 2), "--num_images", "3"], "--seed"),  # image 2's seed is 2**64
        ("digits", ["--seed", str(2**64 - 2), "--num_images", "3"], "--seed"),
        ("img2img", ["--seed", str(2**64 - 1), "--num_images", "2"], "--seed"),
        ("inpaint", ["--seed", str(2**64 - 1), "--num_images", "2"], "--seed"),
        ("denoising_trajectory", ["--seed", str(2**64)], "--seed"),
        ("compare_schedulers", ["--seed", str(-(2**63) - 1)], "--seed"),
        ("interpolate", ["--seed_a", str(2**64)], "--seed_a"),
        ("interpolate", ["--seed_b", str(-(2**63) - 1)], "--seed_b"),
    ],
)
def test_seed_torch_cannot_take_fails_before_any_work(name, argv, flag, tmp_path, monkeypatch):
    """Image i of a grid is drawn with `--seed + i` by `torch.Generator.manual_seed`, which takes [-2**63, 2**64 - 1]:
    a seed past it failed with "Overflow when unpacking long long" after the model had loaded."""

    def no_work(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the seed was checked")

    monkeypatch.setattr("sdscratch.demo.load_pipeline", no_work)
    with pytest.raises(ValueError, match=rf"`{flag}` must be in \[-9223372036854775808, "):
        run_example(name, argv + ["--output", str(tmp_path / "x.png")])


def test_check_seed_takes_every_seed_torch_takes():
    for seed, count in ((2**64 - 3, 3), (-(2**63), 1), (0, 8)):
        assert check_seed(seed, count) == seed
        for i in range(count):  # torch takes each seed of the range
            torch.Generator().manual_seed(seed + i)
    with pytest.raises(
        ValueError, match=r"`--seed` must be in \[-9223372036854775808, 18446744073709551613\] \(image i"
    ):
        check_seed(2**64 - 2, 3)
    with pytest.raises(ValueError, match="`seed_x` must be an integer, got True"):
        check_seed(True, flag="seed_x")


@pytest.mark.parametrize("name", ["generate", "img2img", "inpaint", "interpolate", "digits", "denoising_trajectory"])
def test_help_imports_no_torch(name):
    """These examples import torch and sdscratch only after parsing, so that --help and a bad flag answer at once
    (inpaint.py's top-level `from sdscratch.demo import top_mask` made its --help take 4-7 s instead of 0.1)."""
    code = (
        "import contextlib, io, runpy, sys\n"
        f"sys.argv = [{str(EXAMPLES / (name + '.py'))!r}, '--help']\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_an_output_under_a_file_fails_before_any_work(tmp_path):
    (tmp_path / "faces.png").write_bytes(b"")  # a file where save_atomic would have to create a folder
    with pytest.raises(ValueError, match=r"`--output` .* is a file, not a folder"):
        check_output_path(tmp_path / "faces.png" / "more" / "x.png")
    assert check_output_path(tmp_path / "new" / "folders" / "x.png") == "PNG"  # missing folders are created later


def test_save_atomic_refuses_a_path_without_image_extension(tmp_path):
    with pytest.raises(ValueError, match="extension"):
        save_atomic(Image.new("RGB", (4, 4)), tmp_path / "noext")
    assert list(tmp_path.iterdir()) == []


def test_inpaint_tiny_mask_fraction_repaints_one_row(tmp_path, capsys):
    from sdscratch.demo import top_mask  # the example's mask (shared with the inpainting evaluation)

    mask = torch.tensor(list(top_mask(64, 0.005).getdata())).reshape(64, 64)
    assert (mask[0] == 255).all() and (mask[1:] == 0).all()
    output = tmp_path / "inpaint.png"
    run_example("inpaint", TINY + ["--num_images", "1", "--mask_fraction", "0.005", "--output", str(output)])
    assert Image.open(output).size == (3 * 64 + 4, 64)


def test_load_image_scales_high_bit_depth_and_center_crops(tmp_path):
    from sdscratch.demo import load_image

    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(gray16)  # mid-grey, mode I;16
    assert Image.open(gray16).mode.startswith("I;16")
    assert load_image(gray16, 64).getpixel((10, 10)) == (128, 128, 128)  # not clipped to white
    assert load_image(Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)), 8).getpixel((0, 0)) == (128,) * 3
    assert load_image(Image.fromarray(np.full((8, 8), 65535, dtype=np.int32)), 8).getpixel((0, 0)) == (255,) * 3
    wide = Image.new("RGB", (96, 32), (0, 0, 255))  # blue bands left and right of a red centre square
    wide.paste((255, 0, 0), (32, 0, 64, 32))
    square = load_image(wide, 16)
    assert square.size == (16, 16) and set(square.getdata()) == {(255, 0, 0)}  # cropped, not squeezed


@pytest.mark.parametrize("name", ["img2img", "inpaint"])
def test_16_bit_non_square_image_input(name, tmp_path):
    image = tmp_path / "gray16.png"
    array = np.full((40, 120), 65535, dtype=np.uint16)  # white bands left and right of a mid-grey square
    array[:, 40:80] = 32768
    Image.fromarray(array).save(image)
    output = tmp_path / "out.png"
    run_example(name, TINY + ["--num_images", "1", "--image", str(image), "--output", str(output)])
    first_tile = Image.open(output).crop((0, 0, 64, 64))
    assert set(first_tile.getdata()) == {(128, 128, 128)}  # the input, scaled to 8 bits and center-cropped


def test_denoising_trajectory_num_snapshots_and_heun_step_count(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--num_snapshots"):
        run_example("denoising_trajectory", ["--num_snapshots", "0", "--output", str(tmp_path / "t.png")])
    argv = ["--steps", "3", "--num_snapshots", "2", "--scheduler", "heun", "--output", str(tmp_path / "t.png")]
    run_example("denoising_trajectory", argv)
    assert "(2 snapshots of 3 steps, 5 scheduler calls)" in capsys.readouterr().out  # Heun: 2 calls a step


def test_cartoon_faces_grid_follows_the_example_conventions(tmp_path, capsys):
    output = tmp_path / "nodir" / "grid.png"
    path = run_example("cartoon_faces_grid", ["--num_faces", "2", "--columns", "2", "--output", str(output)])
    assert Path(path) == output and Image.open(output).size == (2 * 232, 128 + 96)
    out = capsys.readouterr().out
    assert f"wrote {output}" in out and " s" in out
    assert os.listdir(output.parent) == ["grid.png"]  # folder created, no temporary file left


def test_architecture_diagram_bad_output_fails_before_drawing(tmp_path, monkeypatch):
    """A folder or extensionless --output is refused before the models are built, and no temporary file is left."""
    spec = importlib.util.spec_from_file_location("diagram", EXAMPLES.parent / "docs" / "make_architecture_diagram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def no_work(*args, **kwargs):
        raise AssertionError("the models were built before --output was checked")

    monkeypatch.setattr(module, "load_models", no_work)
    (tmp_path / "folder").mkdir()
    for output in (tmp_path / "folder", tmp_path / "noext"):
        with pytest.raises(ValueError, match="--output"):
            module.main(["--output", str(output)])
    assert [p.name for p in tmp_path.iterdir()] == ["folder"] and not list((tmp_path / "folder").iterdir())


@pytest.mark.parametrize(
    "name, flags, message",
    [
        ("generate", ["--steps", "0"], "--steps must be at least 1"),
        ("img2img", ["--strength", "1.5"], r"--strength must be in \[0, 1\]"),
        ("img2img", ["--steps", "0"], "--steps at least 1"),
        ("inpaint", ["--steps", "0"], "--steps must be at least 1"),
        ("interpolate", ["--steps", "0"], "--steps must be at least 1"),
        ("digits", ["--steps", "0"], "--steps must be at least 1"),
    ],
)
def test_bad_sampling_flags_fail_before_the_pipeline_loads(name, flags, message, tmp_path, monkeypatch):
    """They failed in the pipeline's input checks, as a traceback after the model had loaded."""

    def no_work(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the flags were checked")

    monkeypatch.setattr("sdscratch.demo.load_pipeline", no_work)
    with pytest.raises(SystemExit, match=message):
        run_example(name, [*flags, "--output", str(tmp_path / "out.png")])


@pytest.mark.parametrize("name", ["img2img", "inpaint"])
def test_unreadable_image_fails_before_the_pipeline_loads(name, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before --image was read")

    monkeypatch.setattr("sdscratch.demo.load_pipeline", no_work)
    (tmp_path / "notes.png").write_text("not an image")
    for image in (tmp_path / "missing.png", tmp_path / "notes.png", tmp_path):
        with pytest.raises(SystemExit, match="--image"):
            run_example(name, ["--image", str(image), "--output", str(tmp_path / "out.png")])


def test_interpolate_refuses_a_gif_delay_it_cannot_write(tmp_path):
    for duration in ("0", "-5", "9"):  # PIL writes no GIF delay below 10 ms: viewers would pick their own speed
        with pytest.raises(SystemExit, match="--duration_ms"):
            run_example("interpolate", ["--duration_ms", duration, "--output", str(tmp_path / "m.gif")])
    assert list(tmp_path.iterdir()) == []


def test_load_pipeline_prints_no_loading_bars_and_restores_them(tmp_path, capsys):
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    tiny_random_pipeline(seed=0).save_pretrained(tmp_path / "pipe")
    capsys.readouterr()
    load_pipeline(tmp_path / "pipe")
    assert "Loading" not in capsys.readouterr().err  # "Loading pipeline components" / "Loading weights" bars
    assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()


@pytest.fixture
def pipeline_calls(monkeypatch):
    """Every `CartoonFacePipeline.__call__` / `.interpolate` an example makes (then run as usual): the method, its
    prompt and keyword arguments, and the generators' seeds."""
    from sdscratch.pipelines.pipeline_cartoon_face import CartoonFacePipeline

    calls = []
    for method in ("__call__", "interpolate"):
        original = getattr(CartoonFacePipeline, method)

        @functools.wraps(original)  # the signature stays the method's (interpolate checks __call__'s)
        def spy(self, *args, _original=original, _method=method, **kwargs):
            generators = kwargs.get("generator") or []
            seeds = [g.initial_seed() for g in (generators if isinstance(generators, list) else [generators])]
            calls.append({"method": _method, "prompt": args[0] if args else kwargs.get("prompt"), **kwargs,
                          "seeds": seeds})  # fmt: skip
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(CartoonFacePipeline, method, spy)
    return calls


FLAG_CASES = [
    ("generate", ["--negative_prompt", "glasses", "--guidance_scale", "1.5", "--num_images", "2", "--seed", "5"],
     {"negative_prompt": "glasses", "guidance_scale": 1.5, "num_images_per_prompt": 2, "seeds": [5, 6]}),
    ("img2img", ["--strength", "0.5", "--guidance_scale", "2.5", "--num_images", "2", "--seed", "5"],
     {"strength": 0.5, "guidance_scale": 2.5, "num_images_per_prompt": 2, "seeds": [5, 6]}),
    ("inpaint", ["--guidance_scale", "2.5", "--num_images", "1", "--seed", "5"],
     {"strength": 1.0, "guidance_scale": 2.5, "num_images_per_prompt": 1, "seeds": [5]}),
    ("digits", ["--prompt", "3", "--guidance_scale", "2.5", "--num_images", "2", "--seed", "5"],
     {"prompt": "3", "guidance_scale": 2.5, "num_images_per_prompt": 2, "seeds": [5, 6]}),
    ("interpolate", ["--seed_a", "2", "--seed_b", "9", "--num_frames", "2", "--guidance_scale", "2.5"],
     {"seed_a": 2, "seed_b": 9, "num_images": 2, "guidance_scale": 2.5}),
]  # fmt: skip


@pytest.mark.parametrize("name,argv,expected", FLAG_CASES, ids=[case[0] for case in FLAG_CASES])
def test_example_flags_reach_the_pipeline_call(name, argv, expected, tmp_path, pipeline_calls):
    run_example(name, TINY + argv + ["--output", str(tmp_path / "out.png")])
    call = pipeline_calls[0]  # interpolate then calls the pipeline once, for all its frames
    assert call["method"] == ("interpolate" if name == "interpolate" else "__call__")
    assert call["num_inference_steps"] == 2
    assert {key: call[key] for key in expected} == expected


def test_inpaint_prompt_is_the_faces_caption_with_the_new_hair_colour(tmp_path, pipeline_calls, capsys):
    from sdscratch.data import generate_face, make_caption

    attributes = generate_face(4, size=64)[1]  # --face_seed 4, the default
    assert attributes["hair_color"] != "red"
    run_example("inpaint", TINY + ["--num_images", "1", "--hair_color", "red", "--output", str(tmp_path / "i.png")])
    expected = make_caption(attributes).replace(f"{attributes['hair_color']} hair", "red hair")
    assert pipeline_calls[0]["prompt"] == expected and f"prompt: {expected}" in capsys.readouterr().out


def test_interpolate_second_prompt_defaults(tmp_path, pipeline_calls):
    module_argv = TINY + ["--num_frames", "2", "--output", str(tmp_path / "m.png")]
    run_example("interpolate", module_argv)  # one seed: the two default prompts
    run_example("interpolate", module_argv + ["--seed_b", "3"])  # two seeds: the same prompt at both ends
    run_example("interpolate", module_argv + ["--seed_b", "0"])  # --seed_b = --seed_a: the two prompts again
    prompts = [(call["prompt_a"], call["prompt_b"]) for call in pipeline_calls if call["method"] == "interpolate"]
    two = ("Cartoon face without glasses, without facial hair, black hair and with white skin",
           "Cartoon face with glasses, with facial hair, orange hair and with dark skin")  # fmt: skip
    assert prompts == [two, (two[0], two[0]), two]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_denoising_trajectory_predicted_x0_is_ddpms(prediction_type):
    """The example's x_0 for schedulers that do not return one equals DDPMScheduler's `pred_original_sample`."""
    from diffusers import DDPMScheduler

    spec = importlib.util.spec_from_file_location("trajectory", EXAMPLES / "denoising_trajectory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ddpm = DDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    ddpm.set_timesteps(10)
    generator = torch.Generator().manual_seed(0)
    sample, model_output = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    t = ddpm.timesteps[3]
    expected = ddpm.step(model_output, t, sample, generator=generator).pred_original_sample
    assert torch.allclose(module.predicted_x0(ddpm, model_output, t, sample), expected, atol=1e-5)


def test_load_pipeline_fallback_takes_the_dtype():
    pipe = load_pipeline(dtype=torch.bfloat16)  # no shipped weights: the tiny random pipeline, in that dtype
    assert pipe.unet.dtype == pipe.text_encoder.dtype == pipe.vae.dtype == torch.bfloat16


def test_compare_schedulers_samples_every_scheduler_from_the_same_seed(tmp_path, pipeline_calls):
    argv = [
        "--schedulers",
        "dpm++,euler",
        "--seed",
        "4",
        "--guidance_scale",
        "2.5",
        "--output",
        str(tmp_path / "c.png"),
    ]
    run_example("compare_schedulers", TINY + argv)
    sampled = [(call["seeds"], call["guidance_scale"], call["num_inference_steps"]) for call in pipeline_calls[1:]]
    assert sampled == [([4], 2.5, 2)] * 2  # after the 1-step warm-up: one image per scheduler, as asked
