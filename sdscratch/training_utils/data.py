"""Data: the training images and captions, read from the data flags the same way by every script (thin wrappers
over `sdscratch.data.loading`).

`load_train_dataset` loads the data set; `image_transform`, `TrainingImages` and `RandomCropWatch` decode its images
with random crops that a resumed run draws as an uninterrupted one; `load_frozen_vae` loads the VAE whose latents
the UNet learns; `caption_table`, `tokenize_captions` and `draw_caption_rows` hold every image's captions as
token rows and draw one per image and step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np
import torch
from PIL import Image

from ..hub import VAE_FILES, snapshot_folder
from ..models.vae import SmallVAE
from .accelerator import is_training_checkpoint

logger = logging.getLogger(__name__)


def load_train_dataset(args: argparse.Namespace, captions: bool = True):
    """The training images and captions (columns `image`, `text`) named by the data flags; `captions=False` (the
    VAE): images alone, so that a folder of images without captions loads."""
    from ..data.loading import load_image_caption_dataset

    return load_image_caption_dataset(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        image_column=args.image_column,
        caption_column=args.caption_column,
        max_samples=args.max_train_samples,
        cache_dir=args.cache_dir,
        seed=args.seed,
        captions=captions,
    )


def image_transform(args: argparse.Namespace, process_index: int = 0, channels: int = 3):
    """PIL image -> `(channels, resolution, resolution)` tensor in [-1, 1] (1 channel = grayscale).

    Flips are left to the training loop, where they draw from the global RNG that checkpoints save. Random crops
    (without --center_crop, for images larger than --resolution) never touch the global RNG: images decoded once
    (caches) draw from a generator of this process (`seed + process_index`); the training loop's images, decoded
    by the data loader, from one per image and epoch (`TrainingImages`), so that a resumed run crops as an
    uninterrupted one.
    """
    from ..data.loading import build_image_transform

    generator = torch.Generator().manual_seed(args.seed + process_index)
    return build_image_transform(
        args.resolution, args.center_crop, random_flip=False, channels=channels, generator=generator
    )


def image_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of image `index`'s random crop in `epoch`: a pure function of the three numbers."""
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence((seed, epoch, index)).generate_state(1, np.uint64)[0])
    )


class TrainingImages(torch.utils.data.Dataset):
    """Row i of a data set -> `{"index": i}`, plus `"pixel_values"`: its image through `transform` (an
    `image_transform`) when one is given (none: a cache holds the images), decoded as the data loader asks.

    Each image's random crop draws from its own generator, seeded by `(seed, epoch, i)` (the training loop calls
    `set_epoch` with the data loader's): a new crop every epoch, as diffusers' scripts draw, and the same one in any
    DataLoader worker, process or run. A generator of the transform's own, or a worker's (seeded by the loader's
    generator), restarts when a run is resumed and sees the batches the resumed run skips shifted between the
    workers: the resumed run would train on other crops than the uninterrupted one.

    The epoch lives in shared memory, so that persistent DataLoader workers (the training scripts keep theirs: a
    "spawn" worker, macOS' and Windows' default, takes seconds to start, every epoch otherwise) read the one set here.
    """

    def __init__(self, dataset, transform=None, seed: int = 0):
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # () shared with the workers

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:  # one batch decoded at once, as datasets does
        indices = [int(i) for i in indices]
        if self.transform is None:
            return [{"index": i} for i in indices]
        images, epoch = self.dataset[indices]["image"], self.epoch
        return [
            {"index": i, "pixel_values": self.transform(image, generator=image_generator(self.seed, epoch, i))}
            for i, image in zip(indices, images)
        ]


def stack_pixel_values(examples: list[dict]) -> torch.Tensor:
    """`TrainingImages` rows -> a `(B, C, H, W)` batch of their `"pixel_values"` (`train_vae.py`'s `collate_fn`: a
    module-level function, so that DataLoader workers started with "spawn", macOS' and Windows' default, can
    receive it pickled; a lambda cannot be)."""
    return torch.stack([example["pixel_values"] for example in examples])


class RandomCropWatch:
    """Wraps an `image_transform` to count the images it gives a random crop: non-square after the resize to
    `--resolution` and no `--center_crop`. For caches that decode every image once (`--cache_latents`, CLIP's
    in-memory images), whose crop is then fixed for the whole run; the transform itself is called unchanged."""

    def __init__(self, transform, resolution: int, center_crop: bool):
        self.transform, self.resolution, self.center_crop = transform, resolution, center_crop
        self.random_crops = 0

    def __call__(self, image: Image.Image) -> torch.Tensor:
        from ..data.loading import resized_size

        if not self.center_crop and resized_size(*image.size, self.resolution) != (self.resolution,) * 2:
            self.random_crops += 1
        return self.transform(image)

    def warn(self, num_images: int, cache: str, fix: str) -> None:
        """Logs a warning when any image got a random crop (`cache`: what holds the decoded images; `fix`: the
        flags that give fresh crops every epoch)."""
        if self.random_crops:
            logger.warning(
                f"{self.random_crops} of {num_images} images are not square after the resize to --resolution "
                f"{self.resolution} and get a random crop (no --center_crop), but {cache}: each image's crop is "
                f"drawn once and fixed for the whole run (diffusers draws a new one every epoch). Use {fix}."
            )


def check_resolution(resolution: int, factor: int) -> None:
    """`--resolution` must be a multiple of the VAE's downsampling factor (checked before any training)."""
    if resolution % factor:
        raise ValueError(f"--resolution {resolution} must be divisible by the VAE's downsampling factor {factor}.")


def load_frozen_vae(path: str, flag: str = "--pretrained_vae_model_name_or_path"):
    """The frozen SmallVAE in `path` or `path/vae` (train_vae.py's output), and that folder; `path` may be a Hub id
    (`sdscratch.hub.snapshot_folder`: its cached snapshot offline). A clear error, naming the command-line `flag`
    that gave `path`, for anything else."""
    path = snapshot_folder(path, flag, VAE_FILES)
    folder = path if os.path.isfile(os.path.join(path, "config.json")) else os.path.join(path, "vae")
    checkpoint = next((p for p in (path, os.path.dirname(folder)) if is_training_checkpoint(p)), None)
    if checkpoint is not None:  # its vae/ holds the raw weights and a scaling_factor never measured (1.0)
        raise ValueError(
            f"{flag} {path} is a training checkpoint (for --resume_from_checkpoint): its VAE has the raw, non-EMA "
            "weights and a latent scaling_factor that is measured only when train_vae.py finishes. Give the run's "
            f"output folder ({os.path.dirname(os.path.abspath(checkpoint))}) once it has finished (its command run "
            "again with --resume_from_checkpoint latest finishes it)."
        )
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{flag} {path}: no config.json there or in its vae/ subfolder.")
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        class_name = json.load(f).get("_class_name")
    if class_name != "SmallVAE":
        raise ValueError(f"{flag} {path} holds a {class_name}, not a SmallVAE.")
    return SmallVAE.from_pretrained(folder).requires_grad_(False).eval(), folder


def image_caption_lists(dataset) -> list[list[str]]:
    """Every image's captions: a data set's `all_captions` column when it has several per image
    (`load_image_caption_dataset`, the built-in faces' `captions_per_image`), else `[text]` per image."""
    from ..data import ALL_CAPTIONS

    if ALL_CAPTIONS in dataset.column_names:
        return dataset[ALL_CAPTIONS]
    return [[caption] for caption in dataset["text"]]


def caption_table(caption_lists: list[list[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Each image's captions as rows of one table of unique captions ("" last: the unconditional caption of CFG).

    Returns `(unique_captions, caption_rows, caption_counts)`: `caption_rows` `(N, K)` holds image i's
    `caption_counts[i]` rows first, padded with its first row up to K, the most captions of an image."""
    unique_captions = sorted({caption for captions in caption_lists for caption in captions} - {""}) + [""]
    row_of = {caption: i for i, caption in enumerate(unique_captions)}
    counts = torch.tensor([len(captions) for captions in caption_lists], dtype=torch.long)
    if (counts < 1).any():
        raise ValueError(f"image {int((counts < 1).nonzero()[0])} has no caption")
    width = int(counts.max()) if len(caption_lists) else 1
    rows = [
        [row_of[c] for c in captions] + [row_of[captions[0]]] * (width - len(captions)) for captions in caption_lists
    ]
    return unique_captions, torch.tensor(rows, dtype=torch.long).reshape(len(caption_lists), width), counts


def tokenize_captions(tokenizer, captions: list[str], config_flag: str = "--unet_config") -> torch.Tensor:
    """`(len(captions), model_max_length)` input ids, padded and truncated exactly as `CartoonFacePipeline` tokenizes
    prompts (diffusers' `tokenize_captions`). The pipeline warns when it truncates a prompt; so does this, once for
    all the captions: the text encoder and the UNet never see what lies beyond `model_max_length` (`config_flag`: the
    flag naming the JSON whose "tokenizer" section sets it)."""
    max_length = tokenizer.model_max_length
    tokens = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    full = [i for i, n in enumerate(tokens.attention_mask.sum(dim=1).tolist()) if n == max_length]  # fit or cut
    # one token more than fits is enough to tell (and keeps transformers' 'indexing errors' warning away)
    cut = [
        captions[i]
        for i in full
        if len(tokenizer(captions[i], truncation=True, max_length=max_length + 1).input_ids) > max_length
    ]
    if cut:
        logger.warning(
            f"{len(cut)} of {len(captions)} distinct captions are longer than the tokenizer's model_max_length="
            f"{max_length} tokens (<|startoftext|> and <|endoftext|> included) and are truncated, so the model never "
            f"sees their end, e.g. {cut[0]!r}: shorten them, or (a tokenizer trained by the script) raise "
            f'"model_max_length" in the "tokenizer" section of {config_flag}.'
        )
    return tokens.input_ids


def draw_caption_rows(caption_rows: torch.Tensor, caption_counts: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The caption row of each image in `index` (B,): with one caption per image, that one (no random draw, so
    runs on single-caption data keep their random stream); else one of the image's captions, uniformly, drawn
    from torch's global RNG (checkpointed: a resumed run draws what the uninterrupted one would)."""
    if caption_rows.shape[1] == 1:
        return caption_rows[index, 0]
    return caption_rows[index, (torch.rand(index.shape[0]) * caption_counts[index]).long()]
