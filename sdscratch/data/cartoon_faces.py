"""Procedural cartoon faces: the built-in, offline stand-in for the Hub's ``Skiittoo/cartoon-faces``.

Every face is a pure function of an integer seed: ``seed -> (attributes, image)``, the same on any machine
(``random.Random`` seeded by a string, no global state). A face is drawn with PIL from layered shapes (hair
back, ears, face, eyes, eyebrows, nose, facial hair, mouth, hair front, glasses) at 4x the output size and
downsampled with a box filter, so edges are antialiased.

Hair colour is readable on every face: the bald style keeps a fringe of hair on both sides of the head, and
eyebrows and facial hair always have the hair colour. The colours were chosen far apart in RGB so that a small
classifier reads each caption attribute at 64x64 (see ``sdscratch.evaluation``).

    sdscratch faces --output_dir faces --num_images 1000   # python -m sdscratch faces; the module's main()
"""

import argparse
import io
import json
import numbers
import os
import random
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from .captions import (
    ALL_CAPTIONS,
    ANY,
    ATTRIBUTES,
    CAPTION_ATTRIBUTES,
    CAPTION_STYLES,
    attributes_match,
    check_attributes,
    make_caption,
    parse_caption,
)

__all__ = [
    "ANY", "ATTRIBUTES", "CAPTION_ATTRIBUTES", "CAPTION_STYLES", "CartoonFacesTorchDataset", "attributes_match",
    "cartoon_faces_dataset", "face_captions", "face_seed", "generate_face", "make_caption", "parse_caption", "render_face",
    "sample_attributes", "write_imagefolder",
]  # fmt: skip

SUPERSAMPLE = 4
ZOOM = 1.2  # faces are laid out on a canvas ZOOM times the image, whose centre is kept
BACKGROUND = (214, 228, 238)
OUTLINE = (45, 35, 35)
HAIR_RGB = {
    "white": (248, 248, 248), "whitish-yellow": (246, 236, 168), "yellow": (240, 200, 30),
    "orange": (248, 140, 30), "dark-orange": (185, 80, 15), "red": (205, 25, 35), "brown": (115, 70, 35),
    "black": (30, 28, 30), "gray": (135, 135, 140), "blue": (40, 85, 215),
}  # fmt: skip
SKIN_RGB = {"white": (255, 226, 204), "yellow": (246, 210, 130), "brown": (196, 132, 84), "dark": (112, 70, 45)}
EYE_RGB = {"brown": (120, 70, 25), "blue": (40, 120, 240), "green": (30, 160, 60), "gray": (150, 150, 160)}
GLASSES_RGB = {"black": (25, 25, 30), "red": (220, 30, 40), "blue": (30, 90, 230), "green": (30, 160, 60)}
MOUTH_RGB = (150, 40, 50)


def _pick(rng: random.Random, values, weights=None) -> str:
    # Our own index draw (not rng.choice) so the sequence never depends on Python's choice implementation.
    u = rng.random()
    if weights is None:
        return values[min(int(u * len(values)), len(values) - 1)]
    total, acc = sum(weights), 0.0
    for value, weight in zip(values, weights):
        acc += weight / total
        if u < acc:
            return value
    return values[-1]


def sample_attributes(seed: int) -> dict[str, str]:
    """The attributes of face ``seed``: half the faces wear glasses, half have facial hair, the rest uniform."""
    rng = random.Random(f"sdscratch-face-attributes-{seed}")
    a = {}
    for name, values in ATTRIBUTES.items():
        if name in ("glasses", "facial_hair"):
            n_kinds = len(values) - 1
            a[name] = _pick(rng, values, [n_kinds] + [1] * n_kinds)  # "none" with probability 1/2
        elif name == "glasses_color":
            a[name] = "none" if a["glasses"] == "none" else _pick(rng, values[1:])
        else:
            a[name] = _pick(rng, values)
    return a


def _jitter(seed: Optional[int]) -> dict[str, float]:
    """Continuous variation (units of the canvas): position, size, proportions. ``None`` = the canonical face."""
    names = ("dx", "dy", "scale", "eye_gap", "eye_y", "mouth_w", "mouth_y", "brow", "hair_len", "glasses")
    if seed is None:
        return dict.fromkeys(names, 0.0)
    rng = random.Random(f"sdscratch-face-jitter-{seed}")
    return {name: rng.uniform(-1.0, 1.0) for name in names}


def render_face(attributes: dict, size: int = 64, seed: Optional[int] = None) -> Image.Image:
    """Draw a face with the given attributes.

    Args:
        attributes: one value per attribute of ``ATTRIBUTES``.
        size: output width and height in pixels, an integer >= 8 (numpy integers are accepted).
        seed: seeds the continuous jitter (position, size, proportions); ``None`` draws the canonical face.

    Returns:
        A ``size x size`` RGB ``PIL.Image`` on a plain background.
    """
    check_attributes(attributes)
    size = _check_size(size)
    a, j = attributes, _jitter(seed)
    out = size * SUPERSAMPLE
    S = round(out * ZOOM)
    image = Image.new("RGB", (S, S), BACKGROUND)
    draw = ImageDraw.Draw(image)
    lw = max(1, round(0.012 * S))  # outline width

    def box(x0, y0, x1, y1):
        return [x0 * S, y0 * S, x1 * S, y1 * S]

    def ellipse(cx, cy, rx, ry, fill, outline=OUTLINE, width=lw):
        draw.ellipse(box(cx - rx, cy - ry, cx + rx, cy + ry), fill=fill, outline=outline, width=width)

    hair, skin = HAIR_RGB[a["hair_color"]], SKIN_RGB[a["skin"]]
    scale = 1.0 + 0.05 * j["scale"]
    cx, cy = 0.5 + 0.025 * j["dx"], 0.56 + 0.02 * j["dy"]
    w, h = {"round": (0.25, 0.26), "oval": (0.215, 0.285), "square": (0.245, 0.265)}[a["face_shape"]]
    w, h = w * scale, h * scale
    top = cy - h
    style = a["hair_style"]
    hair_len = 1.0 + 0.08 * j["hair_len"]

    # 1. Hair behind the head.
    if style == "long":
        draw.rounded_rectangle(box(cx - w - 0.05, top - 0.03, cx + w + 0.05, cy + h * 0.95 * hair_len), radius=0.1 * S, fill=hair, outline=OUTLINE, width=lw)  # fmt: skip
    elif style == "bob":
        draw.rounded_rectangle(box(cx - w - 0.06, top - 0.035, cx + w + 0.06, cy + h * 0.45 * hair_len), radius=0.12 * S, fill=hair, outline=OUTLINE, width=lw)  # fmt: skip
    elif style == "afro":
        ellipse(cx, cy - h * 0.28, w * 1.42 * hair_len, h * 1.12 * hair_len, hair)
    elif style == "bun":
        ellipse(cx, top - 0.06, 0.075, 0.065, hair)

    # 2. Ears, then the face over them.
    for side in (-1, 1):
        ellipse(cx + side * w * 0.97, cy + 0.01, 0.045, 0.06, skin)
    if a["face_shape"] == "square":
        draw.rounded_rectangle(box(cx - w, cy - h, cx + w, cy + h), radius=0.09 * S, fill=skin, outline=OUTLINE, width=lw)  # fmt: skip
    else:
        ellipse(cx, cy, w, h, skin)

    # 3. Eyes and eyebrows (eyebrows in the hair colour).
    eye_gap = w * (0.42 + 0.04 * j["eye_gap"])
    eye_y = cy - 0.015 + 0.012 * j["eye_y"]
    for side in (-1, 1):
        ex = cx + side * eye_gap
        ellipse(ex, eye_y, 0.05, 0.042, (255, 255, 255))
        ellipse(ex, eye_y + 0.004, 0.032, 0.032, EYE_RGB[a["eye_color"]], outline=None)
        ellipse(ex, eye_y + 0.004, 0.013, 0.013, (10, 10, 10), outline=None)
        brow_y = eye_y - 0.075
        tilt = 0.012 * j["brow"]
        brow = [((ex - side * 0.05) * S, (brow_y + 0.008) * S), (ex * S, (brow_y - 0.006) * S), ((ex + side * 0.05) * S, (brow_y + tilt) * S)]  # fmt: skip
        draw.line(brow, fill=OUTLINE, width=round(0.03 * S) + 2 * lw, joint="curve")  # outlined: white brows show
        draw.line(brow, fill=hair, width=round(0.03 * S), joint="curve")

    # 4. Nose.
    nose_y = cy + 0.06
    draw.arc(box(cx - 0.025, nose_y - 0.03, cx + 0.025, nose_y + 0.02), 20, 160, fill=OUTLINE, width=lw)

    # 5. Facial hair (hair colour), under the mouth.
    mouth_y = cy + h * 0.55 + 0.01 * j["mouth_y"]
    facial = a["facial_hair"]
    if facial == "beard":
        draw.chord(box(cx - w, cy - h * 0.35, cx + w, cy + h + 0.01), 0, 180, fill=hair, outline=OUTLINE, width=lw)
        ellipse(cx, mouth_y, 0.075, 0.04, skin, outline=None)
    elif facial == "goatee":
        goatee = box(cx - 0.05, mouth_y + 0.035, cx + 0.05, cy + h - 0.005)
        try:
            draw.rounded_rectangle(goatee, radius=0.03 * S, fill=hair, outline=OUTLINE, width=lw)
        except ValueError:  # PIL fails on some rounded rectangles a few pixels wide (11-12 px images): square corners
            draw.rectangle(goatee, fill=hair, outline=OUTLINE, width=lw)
    if facial in ("beard", "moustache"):
        draw.chord(box(cx - 0.1, mouth_y - 0.075, cx + 0.1, mouth_y + 0.005), 180, 360, fill=hair, outline=OUTLINE, width=lw)  # fmt: skip

    # 6. Mouth.
    mw = 0.07 * (1.0 + 0.15 * j["mouth_w"])
    mouth = a["mouth"]
    if mouth == "smiling":
        draw.chord(box(cx - mw, mouth_y - 0.04, cx + mw, mouth_y + 0.04), 0, 180, fill=MOUTH_RGB, outline=OUTLINE, width=lw)  # fmt: skip
    elif mouth == "open":
        ellipse(cx, mouth_y + 0.01, 0.035, 0.035, MOUTH_RGB)
    elif mouth == "frowning":
        draw.arc(box(cx - mw, mouth_y, cx + mw, mouth_y + 0.06), 200, 340, fill=OUTLINE, width=round(0.02 * S))
    else:
        draw.line([((cx - mw) * S, (mouth_y + 0.01) * S), ((cx + mw) * S, (mouth_y + 0.01) * S)], fill=OUTLINE, width=round(0.018 * S))  # fmt: skip

    # 7. Hair in front: a cap over the top of the head, shaped by the style.
    _draw_hair_front(draw, style, hair, cx, cy, w, h, hair_len, S, lw)

    # 8. Glasses over everything.
    if a["glasses"] != "none":
        _draw_glasses(draw, a["glasses"], GLASSES_RGB[a["glasses_color"]], cx, eye_y, eye_gap, w, j["glasses"], S)

    offset = (S - out) // 2
    return image.crop((offset, offset, offset + out, offset + out)).reduce(SUPERSAMPLE)


def _draw_hair_front(draw, style, hair, cx, cy, w, h, hair_len, S, lw):
    top = cy - h

    def box(x0, y0, x1, y1):
        return [x0 * S, y0 * S, x1 * S, y1 * S]

    if style == "bald":
        # Bald crown, hair on both sides (so the hair colour still shows) and a highlight on the scalp.
        for side in (-1, 1):
            x = cx + side * (w - 0.012)
            draw.ellipse(box(x - 0.048, cy - 0.15, x + 0.048, cy + 0.03), fill=hair, outline=OUTLINE, width=lw)
        draw.arc(box(cx - w * 0.45, top + 0.03, cx + w * 0.1, top + 0.12), 200, 260, fill=(255, 255, 255), width=lw)
        return
    if style == "mohawk":
        draw.rounded_rectangle(box(cx - 0.045, top - 0.12 * hair_len, cx + 0.045, cy - h * 0.45), radius=0.04 * S, fill=hair, outline=OUTLINE, width=lw)  # fmt: skip
        return
    # A cap: the top half of an ellipse whose centre sits on the hair line.
    hair_line = cy - h * (0.42 if style != "bob" else 0.32)
    cap_w = w + (0.035 if style != "curly" else 0.02)
    cap = box(cx - cap_w, top - 0.045, cx + cap_w, 2 * hair_line - (top - 0.045))
    sideburns = style in ("short", "long", "spiky", "curly", "bun", "afro")
    for side in (-1, 1) if sideburns else ():  # sideburns down to the ears, outlined, under the cap
        x0, x1 = sorted((cx + side * cap_w, cx + side * (cap_w - 0.05)))
        draw.rectangle(box(x0, hair_line - 0.03, x1, cy - 0.015), fill=hair, outline=OUTLINE, width=lw)
    draw.chord(cap, 180, 360, fill=hair, outline=OUTLINE, width=lw)
    for side in (-1, 1) if sideburns else ():  # erase the cap's edge where the sideburn continues it
        x0, x1 = sorted((cx + side * cap_w, cx + side * (cap_w - 0.05)))
        if x1 * S - lw >= x0 * S + lw:  # (a small canvas: the outlines cover the whole sideburn, nothing to erase)
            draw.rectangle([x0 * S + lw, (hair_line - 0.02) * S, x1 * S - lw, (hair_line + 0.02) * S], fill=hair)
    if style == "spiky":
        n = 5
        for i in range(n):
            x = cx - cap_w * 0.8 + i * (1.6 * cap_w / (n - 1))
            base = top - 0.02 + abs(i - 2) * 0.012
            draw.polygon([(x - 0.045) * S, (base + 0.03) * S, x * S, (base - 0.1 * hair_len) * S, (x + 0.045) * S, (base + 0.03) * S], fill=hair, outline=OUTLINE, width=lw)  # fmt: skip
    elif style == "curly":
        for i in range(7):
            t = np.pi * (1.0 + i / 6)
            x, y = cx + (cap_w - 0.01) * np.cos(t), hair_line + (hair_line - top + 0.02) * np.sin(t)
            draw.ellipse(box(x - 0.05, y - 0.05, x + 0.05, y + 0.05), fill=hair, outline=OUTLINE, width=lw)


def _draw_glasses(draw, kind, color, cx, eye_y, eye_gap, w, jitter, S):
    r = 0.068 * (1.0 + 0.06 * jitter)
    width = round(0.024 * S)
    for side in (-1, 1):
        ex = cx + side * eye_gap
        lens = [(ex - r) * S, (eye_y - r * 0.85) * S, (ex + r) * S, (eye_y + r * 0.85) * S]
        if kind == "round":
            draw.ellipse(lens, outline=color, width=width)
        elif kind == "square":
            draw.rectangle(lens, outline=color, width=width)
        else:  # sunglasses: dark lenses in a coloured frame
            draw.rounded_rectangle(lens, radius=0.03 * S, fill=(20, 20, 28), outline=color, width=width)
        draw.line([((ex + side * r) * S, eye_y * S), ((cx + side * w * 0.98) * S, (eye_y - 0.01) * S)], fill=color, width=width)  # fmt: skip
    draw.line([((cx - eye_gap + r) * S, eye_y * S), ((cx + eye_gap - r) * S, eye_y * S)], fill=color, width=width)


def generate_face(seed: int, size: int = 64) -> tuple[Image.Image, dict[str, str]]:
    """Face number ``seed``: ``(image, attributes)``, identical on every call and every machine."""
    attributes = sample_attributes(seed)
    return render_face(attributes, size=size, seed=seed), attributes


generate_cartoon_face = generate_face


FACES_PER_SEED = 2**32  # indices of one seed's faces: face_seed(seed, index) for index in [0, 2**32)


def face_seed(seed: int, index: int) -> int:
    """The face seed of item ``index`` of the data set ``seed``: data sets with different seeds never share a face."""
    return int(seed) * FACES_PER_SEED + int(index)


def face_captions(attributes: dict, caption_style: str, face: int, captions_per_image: int = 1) -> list[str]:
    """The captions of built-in face number `face` (its `face_seed`): the first is the data set's ``text``, the
    others are further draws of the same style (another subset, order and phrasing of the rich style; another
    pick of the mixed style), for ``captions_per_image`` > 1."""
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    seeds = [face] + [f"{face}-{k}" for k in range(1, captions_per_image)]
    return [make_caption(attributes, caption_style, seed=s) for s in seeds]


def _is_integer(value) -> bool:
    """An integer, Python's or numpy's (``numbers.Integral``), but not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_size(size) -> int:
    """``size`` as a Python ``int``; raises unless it is an integer >= 8 (numpy integers are accepted)."""
    if not _is_integer(size) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    return int(size)


def _check_face_arguments(
    num_images, size, caption_style: str, captions_per_image: int = 1, start: int = 0
) -> tuple[int, int]:
    """Check the arguments of a face data set before any face is drawn: ``(num_images, size)`` as ``int``."""
    if caption_style not in CAPTION_STYLES:
        raise ValueError(f"caption_style={caption_style!r} is not one of {CAPTION_STYLES}")
    if not _is_integer(num_images) or num_images < 0:
        raise ValueError(f"num_images must be an integer >= 0, got {num_images!r}")
    # face_seed packs (seed, index) into one integer: an index outside [0, 2**32) is another seed's face
    if not _is_integer(start) or not 0 <= int(start) <= FACES_PER_SEED - int(num_images):
        raise ValueError(
            f"start must be an integer in [0, 2**32 - num_images] (faces of one seed are numbered 0 to 2**32 - 1; "
            f"others belong to another seed's data set), got start={start!r} with num_images={num_images}"
        )
    if not _is_integer(captions_per_image) or captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    return int(num_images), _check_size(size)


def _face_rows(num_images: int, size: int, seed: int, caption_style: str, start: int, captions_per_image: int = 1):
    num_images, size = _check_face_arguments(num_images, size, caption_style, captions_per_image, start)
    for index in range(start, start + num_images):
        s = face_seed(seed, index)
        image, attributes = generate_face(s, size=size)
        yield image, face_captions(attributes, caption_style, s, captions_per_image), attributes


def cartoon_faces_dataset(
    num_images: int,
    size: int = 64,
    seed: int = 0,
    caption_style: str = "template",
    start: int = 0,
    captions_per_image: int = 1,
):
    """A ``datasets.Dataset`` of generated faces.

    Args:
        num_images: number of rows (an integer >= 0).
        size: image width and height (an integer >= 8).
        seed: data set seed; row ``i`` is face ``face_seed(seed, start + i)``.
        caption_style: ``"template"`` (Skiittoo), ``"rich"`` or ``"mixed"`` (each face one of the two, by seed).
        start: index of the first face, in [0, 2**32 - num_images] (held-out sets use a far-away ``start``, e.g.
            ``2**31``).
        captions_per_image: with more than 1, a column ``all_captions`` holds that many captions of each face
            (`face_captions`; the first is ``text``), of which the training scripts draw one each time the image
            is used, as diffusers' ``train_text_to_image.py`` does with a caption column of lists.

    Returns:
        ``datasets.Dataset`` with columns ``image`` (PIL RGB), ``text``, one string column per attribute and, for
        ``captions_per_image`` > 1, ``all_captions``.
    """
    import datasets

    columns = {"image": [], "text": [], **{name: [] for name in ATTRIBUTES}}
    all_captions = []
    for image, captions, attributes in _face_rows(num_images, size, seed, caption_style, start, captions_per_image):
        # Encode here with fast PNG settings: 2x faster than letting datasets encode the PIL image.
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        columns["image"].append({"bytes": buffer.getvalue(), "path": None})
        columns["text"].append(captions[0])
        all_captions.append(captions)
        for name, value in attributes.items():
            columns[name].append(value)
    features = {
        "image": datasets.Image(),
        "text": datasets.Value("string"),
        **{n: datasets.Value("string") for n in ATTRIBUTES},
    }
    if captions_per_image > 1:
        columns[ALL_CAPTIONS], features[ALL_CAPTIONS] = all_captions, datasets.List(datasets.Value("string"))
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


class CartoonFacesTorchDataset(torch.utils.data.Dataset):
    """Faces drawn on the fly, as tensors for training (nothing is stored).

    Args:
        num_images: length of the data set (an integer >= 0).
        size: image width and height (an integer >= 8).
        seed: data set seed, as in ``cartoon_faces_dataset``.
        caption_style: ``"template"``, ``"rich"`` or ``"mixed"``.
        start: index of the first face.

    Items are dicts: ``pixel_values`` ``(3, size, size)`` float in [-1, 1], ``text`` and the attributes. The
    arguments are checked on construction.
    """

    def __init__(
        self, num_images: int, size: int = 64, seed: int = 0, caption_style: str = "template", start: int = 0
    ):
        num_images, size = _check_face_arguments(num_images, size, caption_style, start=start)
        self.num_images, self.size, self.seed, self.caption_style, self.start = (
            num_images,
            size,
            seed,
            caption_style,
            start,
        )

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} faces")
        s = face_seed(self.seed, self.start + index)
        image, attributes = generate_face(s, size=self.size)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)  # (3, H, W)
        return {"pixel_values": pixels, "text": make_caption(attributes, self.caption_style, seed=s), **attributes}


def write_imagefolder(
    output_dir: str, num_images: int, size: int = 64, seed: int = 0, caption_style: str = "template", start: int = 0
) -> str:
    """Write faces as ``output_dir/{index:06d}.png`` plus ``metadata.jsonl`` (``file_name``, ``text``,
    ``attributes``), the layout ``datasets.load_dataset("imagefolder", data_dir=output_dir)`` reads.

    The arguments are checked before anything is written, and every file is written under a temporary name and
    renamed once complete, so a bad argument or a crash never empties or truncates an existing ``metadata.jsonl``.

    Args:
        output_dir: the folder (created if needed).
        num_images: number of faces (an integer >= 0).
        size: image width and height (an integer >= 8).
        seed: data set seed, as in ``cartoon_faces_dataset``.
        caption_style: one of ``CAPTION_STYLES``.
        start: index of the first face (and of the first file name).

    Returns:
        ``output_dir``.
    """
    num_images, size = _check_face_arguments(num_images, size, caption_style, start=start)
    try:
        os.makedirs(output_dir, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:  # a file at output_dir or above it
        raise ValueError(
            f"output_dir={output_dir!r} cannot be a folder: {error.strerror} ({error.filename!r})"
        ) from None
    metadata = os.path.join(output_dir, "metadata.jsonl")
    tmp = metadata + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            rows = _face_rows(num_images, size, seed, caption_style, start)
            for index, (image, (text,), attributes) in enumerate(rows, start=start):
                file_name = f"{index:06d}.png"
                path = os.path.join(output_dir, file_name)
                image.save(path + ".tmp", format="PNG")
                os.replace(path + ".tmp", path)
                f.write(json.dumps({"file_name": file_name, "text": text, "attributes": attributes}) + "\n")
        os.replace(tmp, metadata)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output_dir


def parse_args(argv=None, prog: Optional[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description="Write procedural cartoon faces to an imagefolder.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--caption_style", choices=CAPTION_STYLES, default="template")
    args = parser.parse_args(argv)
    if args.num_images < 0:
        parser.error(f"--num_images must be >= 0, got {args.num_images}")
    if args.resolution < 8:
        parser.error(f"--resolution must be >= 8 (the smallest face drawn), got {args.resolution}")
    return args


def main(argv=None, prog: Optional[str] = None) -> None:
    args = parse_args(argv, prog)
    write_imagefolder(args.output_dir, args.num_images, args.resolution, args.seed, args.caption_style)
    print(f"wrote {args.num_images} faces to {args.output_dir}")


if __name__ == "__main__":
    main()
