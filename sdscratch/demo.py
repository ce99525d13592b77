"""Pipelines for examples and demos: the shipped model when there is one, else a tiny random stand-in.

`load_pipeline()` is what `examples/*.py` call: a pipeline folder you pass, else the model shipped inside the
package (`sdscratch.pretrained(name)`), else -- with a NOTICE on stderr -- a randomly initialised tiny pipeline
with the same architecture family, so every example runs end to end (its images are noise, not faces).

Example:
    ```py
    >>> from sdscratch.demo import load_pipeline
    >>> pipe = load_pipeline()  # shipped cartoon-faces model, or a tiny random one
    >>> image = pipe("Cartoon face with glasses, without facial hair, black hair and with white skin").images[0]
    ```
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import sys
from typing import Any

import torch

from . import _cpu
from .pipelines.input_checks import check_seed  # noqa: F401  (the examples' import)
from .pretrained import PRETRAINED_MODELS, pretrained

#: The tiny random stand-ins: small enough to build and sample in well under a second on one CPU core.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    # 64x64 RGB -> 16x16x4 latents, as the default SmallVAE, but narrow
    "cartoon-faces": {
        "vae": {"block_out_channels": (16, 32, 32), "norm_num_groups": 8, "sample_size": 64, "latent_channels": 4},
        "unet": {
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (32, 64),
            "transformer_levels": (False, True),
            "cross_attention_dim": 64,
            "attention_head_dim": 32,
            "norm_num_groups": 8,
        },  # fmt: skip
    },
    # 16x16 grayscale digits in pixel space (no VAE)
    "digits": {
        "vae": None,
        "unet": {
            "sample_size": 16,
            "in_channels": 1,
            "out_channels": 1,
            "block_out_channels": (32, 64),
            "transformer_levels": (False, True),
            "cross_attention_dim": 64,
            "attention_head_dim": 32,
            "norm_num_groups": 8,
        },  # fmt: skip
    },
}
TINY_TEXT_ENCODER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}


def builtin_captions(name: str = "cartoon-faces") -> list[str]:
    """Every caption the built-in data of `name` can produce in its template style (tokenizer training text).

    Args:
        name (`str`, defaults to `"cartoon-faces"`): `"cartoon-faces"` (the Skiittoo template over every glasses,
            facial hair, hair colour and skin value) or `"digits"` (`"8"`, `"eight"`, `"a handwritten 8"`, ... as `sdscratch.data.digits`).

    Returns:
        `list[str]`
    """
    if name == "digits":
        from .data.digits import DIGIT_CAPTION_TEMPLATES, digit_caption

        return [digit_caption(d, style) for d in range(10) for style in DIGIT_CAPTION_TEMPLATES]
    if name != "cartoon-faces":
        raise ValueError(f"`name` must be 'cartoon-faces' or 'digits', got {name!r}.")
    from .data.captions import ATTRIBUTES, TEMPLATE

    return [
        TEMPLATE.format(glasses=glasses, facial_hair=facial_hair, hair_color=hair, skin=skin)
        for glasses in ("with", "without")
        for facial_hair in ("with", "without")
        for hair in ATTRIBUTES["hair_color"]
        for skin in ATTRIBUTES["skin"]
    ]


def tiny_random_pipeline(seed: int = 0, name: str = "cartoon-faces", scheduler: Any = None):
    r"""A randomly initialised tiny `CartoonFacePipeline`, built offline in a fraction of a second.

    Args:
        seed (`int`, defaults to 0): Seeds the weights (the same seed builds the same pipeline).
        name (`str`, defaults to `"cartoon-faces"`): `"cartoon-faces"` (64x64 RGB, `SmallVAE` 16x16x4 latents) or
            `"digits"` (16x16 grayscale, pixel space).
        scheduler (`SchedulerMixin`, *optional*): Defaults to DPM-Solver++ with sdscratch's saved config
            (`clip_sample=False`, explicit `prediction_type` and `timestep_spacing`).

    Returns:
        `CartoonFacePipeline`: untrained -- its images are noise. Progress bars are off.
    """
    if name not in TINY_CONFIGS:
        raise ValueError(f"`name` must be one of {sorted(TINY_CONFIGS)}, got {name!r}.")
    from .models.unet import SmallUNet
    from .models.vae import SmallVAE
    from .pipelines.pipeline_cartoon_face import CartoonFacePipeline
    from .pipelines.pipeline_utils import make_scheduler
    from .text import build_text_encoder, build_tokenizer

    configs = TINY_CONFIGS[name]
    tokenizer = build_tokenizer(builtin_captions(name), model_max_length=24, vocab_size=600, min_frequency=1)
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's global RNG
        torch.manual_seed(seed)
        vae = SmallVAE(**configs["vae"]) if configs["vae"] is not None else None
        unet = SmallUNet(**configs["unet"])
        text_encoder = build_text_encoder(tokenizer, **TINY_TEXT_ENCODER)
    pipe = CartoonFacePipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler if scheduler is not None else make_scheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(
    model_path: str | os.PathLike | None = None,
    name: str = "cartoon-faces",
    scheduler: str | None = None,
    **kwargs: Any,
):
    r"""The pipeline an example should use: `model_path`, else the shipped model `name`, else a tiny random one.

    When neither exists, prints a NOTICE to stderr (no shipped weights yet; images will be noise) and returns
    [`tiny_random_pipeline`]`(name=name)`, so scripts still run end to end.

    Args:
        model_path (`str` or `os.PathLike`, *optional*): A pipeline folder (`model_index.json` + components), e.g.
            the output of `training/train_unet.py`, or the Hub id of one (`owner/name`: downloaded when the Hub can
            be reached, else read from the HF cache; see `sdscratch.hub.snapshot_folder`).
        name (`str`, defaults to `"cartoon-faces"`): A shipped model of `sdscratch.PRETRAINED_MODELS`.
        scheduler (`str`, *optional*): Swap in another scheduler by short name (`"dpm++"`, `"unipc"`, `"euler"`,
            ... see `sdscratch.schedulers.registry`), built from the pipeline's own scheduler config.
        kwargs: Passed to `CartoonFacePipeline.from_pretrained` (e.g. `dtype=torch.bfloat16`, see [`fast_dtype`]).
            With a Hub option (`revision`, `cache_dir`, `token`, `local_files_only`, ...), a Hub id is passed on as it
            is, for diffusers to resolve with them.

    Returns:
        `CartoonFacePipeline`, with progress bars off.
    """
    if name not in PRETRAINED_MODELS:
        raise ValueError(f"`name` must be one of {sorted(PRETRAINED_MODELS)}, got {name!r}.")
    if scheduler is not None:
        from .schedulers.registry import check_scheduler_name

        check_scheduler_name(scheduler)  # before the models load
    set_cpu_threads()
    if model_path is None:
        try:
            model_path = pretrained(name)
        except FileNotFoundError:
            print(
                f"NOTICE: no shipped weights for {name!r} exist yet in this installation; using a randomly "
                "initialised tiny pipeline instead, so the images will be noise. Pass a trained pipeline folder "
                "(--model_path in the examples, --model with `sdscratch generate`; see docs/training.md).",
                file=sys.stderr,
            )
            pipe = tiny_random_pipeline(name=name)
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            return _with_scheduler(pipe.to(dtype=dtype) if dtype is not None else pipe, scheduler)
    from .hub import HUB_OPTIONS, PIPELINE_FILES, looks_like_local_path, snapshot_folder

    if HUB_OPTIONS.isdisjoint(kwargs) or os.path.isdir(model_path) or looks_like_local_path(model_path):
        model_path = snapshot_folder(model_path, "`model_path`", PIPELINE_FILES)  # a Hub id: its cached snapshot
        if not os.path.isfile(os.path.join(model_path, "model_index.json")):
            raise ValueError(
                f"`model_path` must be a pipeline folder with a model_index.json, got {str(model_path)!r}."
            )
    # else a Hub id with `revision`, `cache_dir`, ...: diffusers resolves it with them
    import sdscratch  # noqa: F401  (diffusers loads our components only if their modules are imported)

    from .pipelines.pipeline_cartoon_face import CartoonFacePipeline

    with _quiet_loading():
        pipe = CartoonFacePipeline.from_pretrained(model_path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return _with_scheduler(pipe, scheduler)


@contextlib.contextmanager
def _quiet_loading():
    """No "Loading pipeline components" / "Loading weights" bars (diffusers, transformers) while an example loads a
    model of a few MB: they would print under the example's own one-line output. Restored after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    enabled = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in enabled:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, was_enabled in enabled:
            if was_enabled:
                lib.enable_progress_bar()


def _with_scheduler(pipe, scheduler: str | None):
    if scheduler is not None:
        from .schedulers.registry import get_scheduler

        pipe.scheduler = get_scheduler(scheduler, pipe.scheduler.config)
    return pipe


def fast_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The fastest dtype that is safe to compute in on `device`: bfloat16 on CPUs with native bf16 matmuls (oneDNN
    reports AVX512-BF16 / AMX; 2-3x the float32 peak there) and on CUDA GPUs with bf16, else float32.

    float16 is never chosen on a CPU: it has no fast path on most of them (about 1 GFLOP/s measured here).

    Args:
        device (`str` or `torch.device`, defaults to `"cpu"`): Where the pipeline will run.

    Returns:
        `torch.dtype`: `torch.bfloat16` or `torch.float32`.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        try:
            return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
        except (AttributeError, RuntimeError):
            return torch.float32
    return torch.float32


def set_cpu_threads() -> int:
    """Gives torch as many threads as there are CPU cores left idle, at least one (never more than now).

    Small models gain nothing from threads that compete with other processes: on a 2-core CPU already running
    something, two threads made a SmallUNet step 5x slower than one. So the count is the cores this process may
    use minus the cores other processes kept busy while sdscratch was being imported (`/proc/stat`, see
    `sdscratch._cpu`), rounded; where that cannot be read, minus the 1-minute load average. The load average
    alone lags by a minute: right after `pip install` it still reads ~1 on an idle machine, which halved the
    threads of README command 1. `OMP_NUM_THREADS` in the environment is respected as given.

    Returns:
        `int`: The number of threads torch now uses.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        cores = _cpu.usable_cores()
        busy = _cpu.busy_cores_of_other_processes()
        if busy is None:
            busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = max(1, min(cores, round(cores - busy)))
        if threads < torch.get_num_threads():
            torch.set_num_threads(threads)
    return torch.get_num_threads()


def card_validation_prompt(folder: str | os.PathLike | None) -> str | None:
    """The first validation prompt named in a pipeline folder's model card (train_unet.py writes "Prompts, left to
    right: `...`; `...`" under its sample grid), or None: no folder, no card, or a card without one. What
    `sdscratch generate`, `examples/generate.py` and `examples/digits.py` draw for a folder when no prompt is given."""
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, "README.md"), encoding="utf-8") as f:
            card = f.read()
    except OSError:
        return None
    match = re.search(r"^Prompts, left to right: `([^`]+)`", card, flags=re.MULTILINE)
    return match.group(1) if match else None


#: The share of the image `examples/inpaint.py` and the inpainting evaluation repaint: the top of the head (the hair).
TOP_MASK_FRACTION = 0.42


def top_mask(size: int, fraction: float = TOP_MASK_FRACTION):
    """White over the top `fraction` of a `size` x `size` image (at least one pixel row), black below (white =
    repaint): a `PIL.Image` of mode "L"."""
    from PIL import Image, ImageDraw

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    mask = Image.new("L", (size, size), 0)
    rows = min(size, max(1, round(fraction * size)))  # a tiny fraction still repaints one row
    ImageDraw.Draw(mask).rectangle([0, 0, size - 1, rows - 1], fill=255)
    return mask


def make_grid(images: list, cols: int | None = None, pad: int = 2, background=(255, 255, 255)):
    """Pastes PIL images of one size into a grid (row by row) with `pad` pixels between them.

    Args:
        images (`list[PIL.Image.Image]`): At least one image; all the size of the first.
        cols (`int`, *optional*): Columns; default: a divisor of `len(images)` near its square root (8 -> 4x2).
        pad (`int`, defaults to 2): Gap in pixels.
        background: Fill colour of the gaps.

    Returns:
        `PIL.Image.Image` in RGB.
    """
    from PIL import Image

    if not images:
        raise ValueError("`images` must hold at least one image.")
    n = len(images)
    if cols is None:
        root = math.ceil(math.sqrt(n))
        cols = next((c for c in range(root, 2 * root + 1) if n % c == 0), root)
    rows = math.ceil(n / cols)
    width, height = images[0].size
    grid = Image.new("RGB", (cols * width + (cols - 1) * pad, rows * height + (rows - 1) * pad), background)
    for index, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((index % cols) * (width + pad), (index // cols) * (height + pad)))
    return grid


def check_output_path(path: str | os.PathLike, flag: str = "--output") -> str:
    """Checks, before any work, that `path` is somewhere an image can be saved: a file name (not an existing folder)
    whose extension names a format PIL can write (`.png`, `.jpg`, `.gif`, `.webp`, ...).

    Args:
        path (`str` or `os.PathLike`): The destination an example will pass to [`save_atomic`].
        flag (`str`, defaults to `"--output"`): The command-line flag (or argument) to name in the error.

    Returns:
        `str`: The PIL format name the extension selects (e.g. `"PNG"`).

    Raises:
        `ValueError`: If `path` is an existing folder, ends in a path separator, has no extension PIL can write, or
            lies under a file or a folder this process cannot write to (missing folders are created when saving).
    """
    from PIL import Image

    text = os.fspath(path)
    if not text or text.endswith((os.sep, "/")) or os.path.isdir(text):
        raise ValueError(f"`{flag}` must be an image file path (e.g. out.png), got {text!r}, which is a folder.")
    parent = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(parent):  # the nearest existing folder is where save_atomic's makedirs starts
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"`{flag}` {text!r} cannot be written: {parent!r} is a file, not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"`{flag}` {text!r} cannot be written: no permission to write in {parent!r}.")
    Image.init()
    extension = os.path.splitext(text)[1].lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format not in Image.SAVE:
        writable = sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE)
        allowed = [ext for ext in (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tiff") if ext in writable]
        raise ValueError(
            f"`{flag}` must end in an image file extension PIL can write ({', '.join(allowed)}, ...), got {text!r}."
        )
    try:  # PIL registers formats it cannot write RGB images in (XBM, MSP: 1-bit) or has no writer for (BUFR, GRIB)
        Image.new("RGB", (2, 2)).save(io.BytesIO(), format=image_format)
    except Exception as error:  # noqa: BLE001  (any writer failure means the same: not this format)
        raise ValueError(
            f"`{flag}` {text!r}: PIL cannot write colour images as {image_format} ({error}); use .png, .jpg or .webp."
        ) from None
    return image_format


def load_image(path, size: int):
    """Opens an image file (or takes a PIL image) as a `size` x `size` RGB image the way the models were trained on theirs.

    16-bit (`I;16`), 32-bit integer (`I`) and float (`F`) images are scaled to 8 bits first (`.convert("RGB")`
    alone clips them, e.g. a 16-bit PNG turns white); transparency is composited on white; a non-square image is
    center-cropped to a square (as the training transform `build_image_transform(center_crop=True)` does) before
    it is resized (bilinear) to `size`.

    Args:
        path (`str`, `os.PathLike` or `PIL.Image.Image`): The image file, or an image already open.
        size (`int`): The width and height of the result.

    Returns:
        `PIL.Image.Image` in RGB, `size` x `size`.
    """
    from PIL import Image

    from .data.loading import to_rgb

    image = path if isinstance(path, Image.Image) else Image.open(path)
    image = to_rgb(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.Resampling.BILINEAR) if side != size else image


def save_atomic(image, path: str | os.PathLike, frames: list | None = None, duration_ms: int = 120) -> str:
    """Saves `image` (or an animated GIF of `frames`) to a temporary name, then renames it to `path`.

    Nothing half-written ever sits at `path`, even if the process is killed while saving.

    Args:
        image (`PIL.Image.Image`): The image; ignored when `frames` is given.
        path (`str` or `os.PathLike`): Destination; its extension picks the format (`.png`, `.gif`, ...).
        frames (`list[PIL.Image.Image]`, *optional*): Animation frames (GIF), looping forever.
        duration_ms (`int`, defaults to 120): Time per frame.

    Returns:
        `str`: The absolute destination path.

    Raises:
        `ValueError`: If `path` is a folder or has no image extension PIL can write (see [`check_output_path`]),
            before anything is written.
    """
    image_format = check_output_path(path, flag="path")
    path = os.path.abspath(os.fspath(path))
    directory, filename = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    stem, suffix = os.path.splitext(filename)
    tmp = os.path.join(directory, f".{stem}.tmp-{os.getpid()}{suffix}")
    try:
        if frames:
            frames[0].save(
                tmp, format=image_format, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0
            )
        else:
            image.save(tmp, format=image_format)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
