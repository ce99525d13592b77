"""One loader for every image-caption source the training scripts accept, and the image transform they share.

Sources (``load_image_caption_dataset``):

- built in: ``"builtin:cartoon-faces"`` and ``"builtin:digits"``, options as a query string, e.g.
  ``"builtin:cartoon-faces?num_images=2000&size=64&caption_style=rich"`` or ``"builtin:digits?size=16"`` (each
  option at most once, never empty);
- a Hub name, through ``datasets.load_dataset``: ``Skiittoo/cartoon-faces`` (image, text), CelebA variants
  with the 40 binary attribute columns (-1/1, 0/1 or bool; as columns or as an ``attributes`` struct),
  ``nelorth/oxford-flowers`` and ``ylecun/mnist`` (image, label);
- a local folder: ``save_to_disk`` output, or an imagefolder with ``metadata.jsonl``.

Captions come from ``caption_column`` if given, else from the known schemas, recognised by their columns: a
text column (``text``, ``caption``, ...), CelebA attributes -> a sentence, a class label -> a sentence
(digits -> ``sdscratch.data.digits`` captions, the 102 flower categories -> their names).
"""

import numbers
from collections.abc import Callable
from typing import Optional
from urllib.parse import parse_qsl

import numpy as np
import torch
from PIL import Image

from .caption_builders import celeba_caption, find_celeba_attributes, label_caption_builder
from .captions import ALL_CAPTIONS

TEXT_COLUMNS = ("text", "caption", "captions", "prompt", "sentence")
IMAGE_COLUMNS = ("image", "img", "picture")
BUILTIN_PREFIX = "builtin:"
# builtin name -> (loader options and their types)
BUILTIN_OPTIONS = {
    "cartoon-faces": {"num_images": int, "size": int, "seed": int, "caption_style": str, "captions_per_image": int},
    "digits": {"size": int, "caption_style": str, "test_fraction": float},
}
HELD_OUT_START = 2**31  # built-in faces of the test split start here: never shared with the train split


def _load_builtin(name: str, split: str):
    from .cartoon_faces import cartoon_faces_dataset
    from .digits import load_digits_dataset

    kind, _, query = name[len(BUILTIN_PREFIX) :].partition("?")
    if kind not in BUILTIN_OPTIONS:
        raise ValueError(
            f"unknown built-in data set {name!r}; use one of {[BUILTIN_PREFIX + k for k in BUILTIN_OPTIONS]}"
        )
    options = {}
    # keep_blank_values: "?num_images=" must be an error, not silently the default
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as error:  # urllib's "bad query field: ''" for "?size=16&" or "?num_images"
        raise ValueError(
            f"cannot read the options of {name!r} ({error}): write them as key=value pairs joined by '&', e.g. "
            f"{BUILTIN_PREFIX}{kind}?{'&'.join(f'{key}=...' for key in list(BUILTIN_OPTIONS[kind])[:2])}"
        ) from None
    for key, value in pairs:
        if key not in BUILTIN_OPTIONS[kind]:
            raise ValueError(f"unknown option {key!r} in {name!r}; {kind} takes {list(BUILTIN_OPTIONS[kind])}")
        if key in options:
            raise ValueError(f"option {key!r} is given more than once in {name!r}; give each option once")
        option_type = BUILTIN_OPTIONS[kind][key]
        if not value.strip():
            raise ValueError(f"option {key!r} in {name!r} is empty; expected {option_type.__name__} value")
        try:
            options[key] = option_type(value)
        except ValueError:
            raise ValueError(
                f"option {key!r} in {name!r} must be {option_type.__name__} value, got {value!r}"
            ) from None
    if kind == "digits":
        return load_digits_dataset(split=split, **options)
    if split not in ("train", "test", "validation"):
        raise ValueError(f"split={split!r}: the built-in cartoon faces have 'train' and 'test' ('validation')")
    options.setdefault("num_images", 10_000 if split == "train" else 1_000)
    return cartoon_faces_dataset(start=0 if split == "train" else HELD_OUT_START, **options)


def _load_raw(dataset_name, train_data_dir, dataset_config_name, split, cache_dir):
    import datasets

    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError("pass exactly one of dataset_name (a Hub name or builtin:...) and train_data_dir (a folder)")
    if dataset_name is not None and dataset_name.startswith(BUILTIN_PREFIX):
        return _load_builtin(dataset_name, split)
    path = train_data_dir or dataset_name
    from pathlib import Path

    folder = Path(path)
    if folder.is_dir() and (folder / "dataset_dict.json").exists():  # DatasetDict.save_to_disk
        dataset_dict = datasets.load_from_disk(str(folder))
        if split not in dataset_dict:
            raise ValueError(f"split={split!r} is not in {path}; it has {list(dataset_dict)}")
        return dataset_dict[split]
    if folder.is_dir() and (folder / "state.json").exists() and (folder / "dataset_info.json").exists():
        if split not in ("train", None):  # Dataset.save_to_disk holds one split: never hand it out as another
            raise ValueError(
                f"split={split!r}: {path} is a single `Dataset.save_to_disk` folder with no named splits; load it "
                "with split='train' (or None), or save a `DatasetDict` with the splits you need"
            )
        return datasets.load_from_disk(str(folder))  # Dataset.save_to_disk
    if train_data_dir is not None:
        return _load_imagefolder(folder, train_data_dir, split, cache_dir)
    return _load_hub_dataset(dataset_name, dataset_config_name, split, cache_dir)


def _load_hub_dataset(dataset_name, dataset_config_name, split, cache_dir):
    """``datasets.load_dataset(dataset_name)``, except for a Hub id when the Hub cannot be used (``HF_HUB_OFFLINE=1``,
    no connection): then the data set's snapshot in the HF cache, where ``load_dataset`` keeps a Hub data set's
    files (or ``hf download --repo-type dataset`` put them), is read as a local folder. ``datasets`` alone finds
    only the Arrow cache of an earlier ``load_dataset`` there and, without ``HF_HUB_OFFLINE``, first retries each
    file it misses for about 25 s."""
    import datasets
    import huggingface_hub
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    from ..hub import looks_like_local_path, snapshot_folder

    def load(path):
        return datasets.load_dataset(path, dataset_config_name, split=split, cache_dir=cache_dir)

    # a builder ("parquet", "imagefolder", ...), or a Hub path datasets resolves itself (hf://datasets/..., buckets/)
    if dataset_name in _PACKAGED_DATASETS_MODULES or dataset_name.startswith(("hf://", "buckets/")):
        return load(dataset_name)
    try:
        folder = snapshot_folder(dataset_name, "--dataset_name", repo_type="dataset", download=False)
    except ValueError as not_cached:
        if not huggingface_hub.is_offline_mode() or looks_like_local_path(dataset_name):  # a Hub id's only
            raise
        try:  # HF_HUB_OFFLINE=1 (no network call): the Arrow cache of an earlier load_dataset, if any
            return load(dataset_name)
        except ConnectionError:
            raise not_cached from None
    return load(dataset_name if folder is None else folder)


def _load_imagefolder(folder, train_data_dir: str, split: Optional[str], cache_dir: Optional[str]):
    """Every image under ``folder`` (nested folders included) as the ``train`` split, as diffusers'
    ``train_text_to_image.py`` reads ``--train_data_dir`` (``data_files={"train": folder/**}``). (``data_dir=``
    would read ``train/`` / ``test/`` subfolders as splits, silently dropping the other images, and ignore a
    ``metadata.jsonl`` at the top next to them.)"""
    import datasets

    if not folder.is_dir():
        raise ValueError(f"train_data_dir={train_data_dir!r} is not a folder")
    if split not in ("train", None):
        raise ValueError(
            f"split={split!r}: an image folder (train_data_dir={train_data_dir!r}) is read whole as the 'train' "
            "split, as diffusers' --train_data_dir; load it with split='train' (or None)"
        )
    try:
        return datasets.load_dataset(
            "imagefolder", data_files={"train": str(folder / "**")}, split="train", cache_dir=cache_dir
        )
    except FileNotFoundError as error:  # datasets' EmptyDatasetError: no data file at all
        no_images = error
    except ValueError as error:  # datasets: 'Instruction "train" corresponds to no data!'
        if "corresponds to no data" not in str(error):
            metadata = [name for name in ("metadata.jsonl", "metadata.csv") if any(folder.rglob(name))]
            if not metadata:
                raise
            # pyarrow's "JSON parse error: ... in row 1" named neither the file nor the folder
            raise ValueError(
                f"train_data_dir={train_data_dir!r}: its {' / '.join(metadata)} cannot be read ({error}). It needs "
                'one row per image with its file_name and caption, e.g. {"file_name": "0001.png", "text": "..."} '
                "per line of metadata.jsonl (rows counted from 0, without the header in a CSV)."
            ) from error
        no_images = error
    raise ValueError(
        f"train_data_dir={train_data_dir!r} holds no image files (nested folders included). Parquet / arrow shards "
        "in the Hub's layout (data/train-*.parquet) load with dataset_name=<the folder>."
    ) from no_images


def _check_folder_labels_are_no_splits(dataset, train_data_dir: str) -> None:
    """An image folder without captions (no metadata file) gets a `label` from its subfolders' names, turned into
    captions ("a photo of a {name}"). Subfolders named as splits (`train/`, `validation/`) are no classes: refused,
    where they would silently caption every image "a photo of a train" or "a photo of a validation"."""
    import datasets
    from datasets.data_files import SPLIT_KEYWORDS  # the folder names datasets reads as splits ("train", "val", ...)

    feature = dataset.features.get("label")
    if any(c in dataset.column_names for c in TEXT_COLUMNS) or not isinstance(feature, datasets.ClassLabel):
        return
    split_names = {keyword for keywords in SPLIT_KEYWORDS.values() for keyword in keywords}
    splits = [name for name in feature.names if name.lower() in split_names]
    if splits:
        raise ValueError(
            f"train_data_dir={train_data_dir!r} has no captions (no metadata.jsonl / metadata.csv with a text "
            f"column), so its images would be captioned by their subfolders' names {feature.names}, and "
            f"{splits} are split names, not classes ({f'a photo of a {splits[0]}'!r}). Add a metadata.jsonl "
            '({"file_name": ..., "text": ...} per image; one in each subfolder works); if they really are classes, '
            "pass caption_column='label' (--caption_column label) to caption by them anyway."
        )


def _find_image_column(dataset, image_column: Optional[str]) -> str:
    import datasets

    columns = dataset.column_names
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"image_column={image_column!r} is not a column; the data set has {columns}")
        return image_column
    for name in IMAGE_COLUMNS:
        if name in columns:
            return name
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise ValueError(f"no image column found (tried {IMAGE_COLUMNS}); pass image_column, one of {columns}")


def _check_caption_column(dataset, caption_column: Optional[str]) -> None:
    if caption_column is not None and caption_column not in dataset.column_names:
        raise ValueError(f"caption_column={caption_column!r} is not a column; the data set has {dataset.column_names}")


def _caption_builder(dataset, caption_column: Optional[str]) -> Callable[[dict, int], str]:
    """A function ``(row, index) -> caption`` for the data set's schema."""
    import datasets

    columns, features = dataset.column_names, dataset.features
    _check_caption_column(dataset, caption_column)
    candidates = [caption_column] if caption_column else [c for c in TEXT_COLUMNS if c in columns]
    for name in candidates:
        feature = features[name]
        if isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and "int" in feature.dtype
        ):
            return label_caption_builder(name, feature)
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            return lambda row, index, name=name: _caption_text(row[name], index, name)
        if isinstance(feature, (datasets.List, datasets.Sequence, list)):  # several captions: the first
            return lambda row, index, name=name: _caption_list(row[name], index, name)[0]
        raise ValueError(f"caption column {name!r} has type {feature}, neither text nor a class label")
    celeba = find_celeba_attributes(features)
    if celeba is not None:
        return lambda row, index: celeba_caption(celeba(row))
    if "label" in columns:
        return label_caption_builder("label", features["label"])
    raise ValueError(
        f"no caption source found in columns {columns}: expected one of {TEXT_COLUMNS}, CelebA attribute columns "
        "or a 'label' column; pass caption_column"
    )


def _caption_text(caption, index: int, name: str) -> str:
    """One caption of a text column; a missing one (``None``) raises, as diffusers' ``train_text_to_image.py``."""
    if not isinstance(caption, str):
        raise ValueError(
            f"Caption column {name!r} should contain either strings or lists of strings; row {index} holds {caption!r}"
        )
    return caption


def _caption_list(captions, index: int, name: str) -> list[str]:
    if (
        captions is None
        or isinstance(captions, str)
        or not len(captions)
        or not all(isinstance(c, str) for c in captions)
    ):
        raise ValueError(
            f"caption column {name!r}, row {index}: expected a non-empty list of strings, got {captions!r}"
        )
    return list(captions)


def _caption_list_column(dataset, caption_column: Optional[str]) -> Optional[str]:
    """The caption column when it holds several captions per row (a list), else ``None``."""
    import datasets

    name = caption_column or next((c for c in TEXT_COLUMNS if c in dataset.column_names), None)
    is_list = name is not None and isinstance(dataset.features[name], (datasets.List, datasets.Sequence, list))
    return name if is_list else None


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit (``I;16``), 32-bit integer (``I``) or float (``F``) image scaled to an 8-bit ``L`` image (PIL's
    ``convert`` alone clips them: a 16-bit PNG turns white); any other mode is returned as it is. 0..65535 is divided
    by 257, 0..1 floats multiplied by 255, 0..255 kept, any other range stretched from min..max to 0..255."""
    if not (image.mode.startswith("I;16") or image.mode in ("I", "F")):
        return image
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and 255 < values.max() <= 65535):
        values = values / 257.0  # 0..65535 -> 0..255
    elif image.mode == "F" and values.max() <= 1.0:
        values = values * 255.0  # 0..1 floats
    elif values.max() > 255 or values.min() < 0:  # any other range: stretch min..max to 0..255
        values = (values - values.min()) * 255.0 / max(values.max() - values.min(), 1e-12)
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """Any PIL image as RGB; transparency is composited on ``background`` (white), not dropped to black, and
    high-bit-depth images are scaled to 8 bits first ([`to_8bit`]), not clipped."""
    image = to_8bit(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _open_image(value, index: int, column: str) -> Image.Image:
    """Decode one undecoded ``datasets.Image`` value (``{"bytes", "path"}``) as it is stored (mode and orientation
    untouched), naming the row if it fails."""
    import io

    path = value.get("path") if isinstance(value, dict) else None
    try:
        if isinstance(value, Image.Image):
            image = value
        elif value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        else:
            image = Image.open(path)
        image.load()
    except Exception as error:
        where = f"file {path!r}" if path else "embedded bytes"
        raise ValueError(f"cannot read the image in row {index} of column {column!r} ({where}): {error}") from error
    return image


def _rgb_value(value, index: int, column: str) -> dict:
    """One image of the source as the stored value of an RGB ``datasets.Image`` column. An RGB image is kept as it is
    stored (its original bytes or path: re-encoding would go through PIL's default JPEG / WebP quality, a lossy
    copy of every photo); ``datasets`` turns it upright on decode from its EXIF orientation. Any other mode is
    turned upright (``exif_transpose``, as ``datasets`` decodes), made RGB (`to_rgb`) and stored as a lossless PNG."""
    import io

    from PIL import ImageOps

    image = _open_image(value, index, column)  # decoded once here: a corrupt file fails now, naming its row
    if image.mode == "RGB" and isinstance(value, dict):
        return {"bytes": value.get("bytes"), "path": value.get("path")}
    image = to_rgb(ImageOps.exif_transpose(image))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def _select(dataset, max_samples: Optional[int], seed: int):
    if max_samples is None:
        return dataset
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    return dataset.shuffle(seed=seed).select(range(min(max_samples, len(dataset)))).flatten_indices()


def load_image_caption_dataset(
    dataset_name: Optional[str] = None,
    train_data_dir: Optional[str] = None,
    dataset_config_name: Optional[str] = None,
    image_column: Optional[str] = None,
    caption_column: Optional[str] = None,
    split: str = "train",
    max_samples: Optional[int] = None,
    cache_dir: Optional[str] = None,
    seed: int = 0,
    captions: bool = True,
):
    """Load any supported source as image-caption pairs (or images alone, ``captions=False``).

    Args:
        dataset_name: a Hub name (or local folder ``datasets.load_dataset`` reads), or ``"builtin:cartoon-faces"`` /
            ``"builtin:digits"`` with optional ``?key=value&...`` options.
        train_data_dir: a local folder: imagefolder (+ ``metadata.jsonl``) or ``save_to_disk`` output.
        dataset_config_name: the Hub configuration, if any.
        image_column: the image column (default: ``image``/``img`` or the first image feature).
        caption_column: the caption column: text, or a class label turned into a sentence (default: detected).
        split: the split to load. A single ``Dataset.save_to_disk`` folder has no named splits: only ``"train"``
            (or ``None``) loads it.
        max_samples: keep this many rows, drawn by shuffling with ``seed`` (as diffusers' ``max_train_samples``).
        cache_dir: ``datasets`` cache folder.
        seed: the shuffle seed of ``max_samples``.
        captions: ``False`` for images alone (``train_vae.py``): no caption is read or required, so a folder of
            images without ``metadata.jsonl`` loads; a ``caption_column`` given must still be a column.

    Returns:
        ``datasets.Dataset`` with columns ``image`` (PIL RGB) and ``text``, plus the source's other columns. A
        caption column of lists (several captions per image, e.g. COCO's five) gives ``text`` = the first and
        ``all_captions`` = all of them, of which the training scripts draw one each time the image is used (the
        built-in faces' ``captions_per_image`` option does the same). With ``captions=False``: ``image`` plus the
        source's other columns, no ``text`` made.
    """
    import datasets

    dataset = _load_raw(dataset_name, train_data_dir, dataset_config_name, split, cache_dir)
    is_faces = (dataset_name or "").partition("?")[0] == BUILTIN_PREFIX + "cartoon-faces"
    if is_faces and image_column in (None, "image") and caption_column in (None, "text"):
        return _select(dataset, max_samples, seed)  # already RGB with captions: skip the decode / re-encode pass
    dataset = _select(dataset, max_samples, seed)
    image_name = _find_image_column(dataset, image_column)
    if captions:
        if train_data_dir is not None and caption_column is None:
            _check_folder_labels_are_no_splits(dataset, train_data_dir)
        caption = _caption_builder(dataset, caption_column)
        caption_list = _caption_list_column(dataset, caption_column)
    else:
        _check_caption_column(dataset, caption_column)
        caption, caption_list = None, None

    dataset = dataset.cast_column(image_name, datasets.Image(decode=False))
    features = dataset.features.copy()
    features.pop(image_name)
    features["image"] = datasets.Image()
    if captions:
        features["text"] = datasets.Value("string")
    if caption_list is not None:
        features[ALL_CAPTIONS] = datasets.List(datasets.Value("string"))
    remove = [image_name] if image_name != "image" else []

    def convert(batch: dict, indices: list) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        batch["image"] = [_rgb_value(row[image_name], i, image_name) for row, i in zip(rows, indices)]
        if captions:
            batch["text"] = [caption(row, i) for row, i in zip(rows, indices)]
        if caption_list is not None:  # every caption: training draws one per use (diffusers: random.choice)
            batch[ALL_CAPTIONS] = [_caption_list(row[caption_list], i, caption_list) for row, i in zip(rows, indices)]
        return batch

    dataset = dataset.map(convert, batched=True, with_indices=True, features=features, remove_columns=remove)
    first = ["image", "text"] if captions else ["image"]
    return dataset.select_columns(first + [c for c in dataset.column_names if c not in first])


def resized_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """``(width, height)`` after torchvision's ``Resize(resolution)``: the shorter side becomes ``resolution``,
    the longer one ``int(resolution * long / short)`` (truncated, as torchvision's
    ``_compute_resized_output_size``). Square images become ``resolution x resolution``."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resolution * long / short)
    return (resolution, new_long) if width <= height else (new_long, resolution)


class ImageTransform:
    """The callable `build_image_transform` returns: a class, not a closure, so that DataLoader workers started
    with the "spawn" method (macOS' and Windows' default) can receive it pickled."""

    def __init__(self, resolution: int, center_crop: bool, random_flip: bool, channels: int, generator=None):
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip
        self.channels, self.default_generator = channels, generator

    def __getstate__(self) -> dict:  # the generator as bytes: a pickled torch.Generator's state tensor goes
        state = dict(self.__dict__)  # through shared memory, which a "spawn" worker on Linux cannot map
        if self.default_generator is not None:
            state["default_generator"] = self.default_generator.get_state().numpy().tobytes()
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("default_generator"), bytes):
            generator = torch.Generator()
            generator.set_state(torch.frombuffer(bytearray(state["default_generator"]), dtype=torch.uint8))
            state["default_generator"] = generator
        self.__dict__.update(state)

    def __call__(self, image: Image.Image, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        resolution, channels = self.resolution, self.channels
        if generator is None and torch.utils.data.get_worker_info() is None:
            generator = self.default_generator  # (in a worker: the worker's global generator)
        image = to_rgb(image).convert("L" if channels == 1 else "RGB")
        w, h = image.size
        new_w, new_h = resized_size(w, h, resolution)
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if self.center_crop:  # torchvision's CenterCrop rounds the offset (half to even), not floors it
            left, top = int(round((new_w - resolution) / 2.0)), int(round((new_h - resolution) / 2.0))
        else:
            left = int(torch.randint(0, new_w - resolution + 1, (1,), generator=generator))
            top = int(torch.randint(0, new_h - resolution + 1, (1,), generator=generator))
        image = image.crop((left, top, left + resolution, top + resolution))
        if self.random_flip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32).reshape(resolution, resolution, channels)
        return torch.from_numpy(array / 127.5 - 1.0).permute(2, 0, 1).contiguous()  # (C, H, W)


def build_image_transform(
    resolution: int,
    center_crop: bool = False,
    random_flip: bool = False,
    channels: int = 3,
    generator: Optional[torch.Generator] = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> ``(channels, resolution, resolution)`` float tensor in [-1, 1], as diffusers' training
    scripts do with torchvision (Resize bilinear, CenterCrop or RandomCrop, RandomHorizontalFlip, Normalize(0.5)).

    Args:
        resolution: output width and height (a positive integer); the shorter side is resized to it first and the
            longer one to ``int(resolution * long / short)``, as torchvision's ``Resize`` (`resized_size`).
        center_crop: crop the centre (else a random crop).
        random_flip: flip horizontally with probability 1/2.
        channels: 3 (RGB) or 1 (grayscale, "L").
        generator: draws the random crop and flip (``None``: torch's global generator). Inside a ``DataLoader``
            worker, whose copy of the transform would restart the same stream in every worker and every epoch, the
            worker's own global generator draws instead: seeded by the loader per worker when it starts (every
            epoch, or once with ``persistent_workers``), as torchvision's random transforms in diffusers' scripts. The transform also takes a ``generator=``
            keyword of its own, which draws that image's crop and flip instead (in a worker too), e.g. one seeded
            per image and epoch, as the training scripts do so that a resumed run crops as an uninterrupted one.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    resolution = int(resolution)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")

    return ImageTransform(resolution, center_crop, random_flip, channels, generator)


def with_image_transform(dataset, transform: Callable[[Image.Image], torch.Tensor]):
    """The data set with rows ``{"pixel_values": transform(image), "text": text}``, applied lazily on access."""

    def apply(batch: dict) -> dict:
        return {"pixel_values": [transform(image) for image in batch["image"]], "text": batch["text"]}

    return dataset.with_transform(apply)


def collate_image_caption(examples: list[dict]) -> dict:
    """Batch rows of ``with_image_transform``: ``pixel_values`` ``(batch, channels, height, width)``, ``text`` list."""
    pixel_values = torch.stack([example["pixel_values"] for example in examples]).float()
    return {"pixel_values": pixel_values.contiguous(), "text": [example["text"] for example in examples]}
