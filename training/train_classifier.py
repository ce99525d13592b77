"""Train the classifiers that `sdscratch.evaluation` measures generated images with.

The shipped weights (`sdscratch/evaluation/weights/<task>/`) were made by exactly these commands:

    python training/train_classifier.py --task cartoon-faces --output_dir sdscratch/evaluation/weights/cartoon-faces
    python training/train_classifier.py --task digits --output_dir sdscratch/evaluation/weights/digits

cartoon-faces: `--num_train_images` procedural faces (dataset seed 1000) with their exact attributes, held-out
accuracy on `--num_eval_images` faces of dataset seed 1001. digits: the real scikit-learn digits, train split,
held-out accuracy on the test split. Light blur and noise (see `augment`) let the classifier also read the
slightly soft images that a VAE decodes. The held-out accuracies are printed and written to
`<output_dir>/training_metrics.json`; the weights are stored in float16 (upcast on load) unless that lowers a
held-out accuracy. Set OMP_NUM_THREADS to the cores you can spare; the shipped runs took 7 and 2 minutes
on one shared core of the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F

from sdscratch.evaluation.classifier import AttributeClassifier
from sdscratch.evaluation.reconstruction import gaussian_window
from sdscratch.evaluation.references import (
    CLASSIFIER_EVAL_SEED,
    CLASSIFIER_TRAIN_SEED,
    classifier_labels,
    labelled_digits,
    labelled_faces,
    uint8_to_float,
)
from sdscratch.training_utils.flags import check_output_folder

# Per task: architecture and training defaults (the flags override the training ones).
TASK_DEFAULTS = {
    "cartoon-faces": dict(in_channels=3, sample_size=64, block_out_channels=(32, 64, 96, 128), num_epochs=3),
    "digits": dict(in_channels=1, sample_size=16, block_out_channels=(32, 64, 96), num_epochs=60),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a `ValueError` naming the flag for counts and rates that cannot train."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="cartoon-faces")
    parser.add_argument("--output_dir", required=True, help="Folder to save_pretrained the classifier to.")
    parser.add_argument("--num_train_images", type=int, default=30000, help="Faces to train on (cartoon-faces).")
    parser.add_argument("--num_eval_images", type=int, default=2000, help="Held-out faces (cartoon-faces).")
    parser.add_argument("--num_epochs", type=int, default=None, help="Default: 3 (faces), 60 (digits).")
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--mixed_precision", choices=["no", "bf16"], default="bf16", help="Autocast on CPU.")
    parser.add_argument("--seed", type=int, default=0, help="Initialisation and batch order.")
    args = parser.parse_args(argv)
    for name in ("num_epochs", "train_batch_size", "num_train_images", "num_eval_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):  # inf trained to NaN weights, saved
        raise ValueError(f"--learning_rate must be a finite number > 0, got {args.learning_rate}.")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise ValueError(f"--weight_decay must be a finite number >= 0, got {args.weight_decay}.")
    check_output_folder(args.output_dir)  # a file at or above it: a crash after the training
    return args


def augment(sample: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur half the images slightly (Gaussian, sigma 0.3-0.7 px) and add noise (std up to 0.03): (B, C, H, W).

    About as soft as a good VAE's reconstructions (sigma 0.5 costs ~30 dB PSNR on these faces), no softer: the
    Frechet distance over these features must still notice a visibly blurred set.
    """
    batch, channels = sample.shape[:2]
    window = gaussian_window(5, 0.3 + 0.4 * torch.rand((), generator=generator).item()).float()
    kernel = (window[:, None] * window[None, :]).expand(channels, 1, 5, 5)
    blurred = F.conv2d(F.pad(sample, (2, 2, 2, 2), mode="replicate"), kernel, groups=channels)
    blur_mask = (torch.rand(batch, 1, 1, 1, generator=generator) < 0.5).float()
    sample = blur_mask * blurred + (1 - blur_mask) * sample
    noise_std = 0.03 * torch.rand(batch, 1, 1, 1, generator=generator)
    return (sample + noise_std * torch.randn(sample.shape, generator=generator)).clamp(-1, 1)


@torch.no_grad()
def held_out_accuracy(
    model: AttributeClassifier, images: torch.Tensor, labels: torch.Tensor, names
) -> dict[str, float]:
    """Per-attribute accuracy on uint8 images `(N, C, H, W)`; column `i` of `labels` holds attribute `names[i]`."""
    predictions, _ = model.classify(uint8_to_float(images))
    return {name: (predictions[name] == labels[:, i]).float().mean().item() for i, name in enumerate(names)}


def main(argv=None):
    args = parse_args(argv)
    defaults = TASK_DEFAULTS[args.task]
    num_epochs = defaults["num_epochs"] if args.num_epochs is None else args.num_epochs
    torch.manual_seed(args.seed)
    start_time = time.time()

    # 1. Data: uint8 images (N, C, H, W) and value indices (N, num_attributes).
    if args.task == "cartoon-faces":
        train_images, train_labels = labelled_faces(args.num_train_images, CLASSIFIER_TRAIN_SEED)
        eval_images, eval_labels = labelled_faces(args.num_eval_images, CLASSIFIER_EVAL_SEED)
    else:
        train_images, train_labels = labelled_digits("train", size=defaults["sample_size"])
        eval_images, eval_labels = labelled_digits("test", size=defaults["sample_size"])
    print(f"data: {len(train_images)} train / {len(eval_images)} held-out images ({time.time() - start_time:.0f} s)")

    # 2. Model and optimiser (one-cycle cosine schedule with a short warm-up).
    labels = classifier_labels(args.task)
    model = AttributeClassifier(
        labels=labels,
        in_channels=defaults["in_channels"],
        sample_size=defaults["sample_size"],
        block_out_channels=defaults["block_out_channels"],
    )
    print(f"classifier: {sum(p.numel() for p in model.parameters()) / 1e3:.0f}k parameters, heads {list(labels)}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_images) / args.train_batch_size)
    total_steps = num_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.learning_rate, total_steps=total_steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(args.seed)

    # 3. Training loop: summed cross-entropy of every head.
    step = 0
    for epoch in range(num_epochs):
        model.train()
        order = torch.randperm(len(train_images), generator=generator)
        running = 0.0
        for start in range(0, len(order), args.train_batch_size):
            index = order[start : start + args.train_batch_size]
            sample = augment(uint8_to_float(train_images[index]), generator)
            target = train_labels[index]  # (B, num_attributes), columns in the order of `labels`
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16"):
                logits = model(sample).logits
            loss = sum(F.cross_entropy(logits[name].float(), target[:, i]) for i, name in enumerate(labels))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            running += loss.item()
            if step % 50 == 0:
                print(
                    f"epoch {epoch} step {step}/{total_steps} loss {running / 50:.4f} ({time.time() - start_time:.0f} s)"
                )
                running = 0.0

    # 4. Held-out accuracy in float32, then again after the float16 round trip that the saved file makes.
    model.eval()
    accuracy = held_out_accuracy(model, eval_images, eval_labels, list(labels))
    reference, _ = model.classify(uint8_to_float(eval_images))
    float32_state = {key: value.clone() for key, value in model.state_dict().items()}
    model.half().float()
    rounded, _ = model.classify(uint8_to_float(eval_images))
    changed = sum(int((reference[name] != rounded[name]).sum()) for name in labels)
    accuracy_fp16 = held_out_accuracy(model, eval_images, eval_labels, list(labels))
    for name in labels:
        print(
            f"held-out accuracy {name:>14}: {100 * accuracy[name]:6.2f}%  (float16 weights {100 * accuracy_fp16[name]:6.2f}%)"
        )
    print(f"float16 storage changed {changed} of {len(eval_images) * len(labels)} held-out predictions")

    # 5. Save: float16 weights unless that lowers a held-out accuracy, plus the numbers above.
    lossless = all(accuracy_fp16[name] >= accuracy[name] for name in labels)
    save_dtype = torch.float16 if lossless else torch.float32
    if lossless:
        model.half()
    else:  # undo the rounding: reload the float32 weights kept before it
        model.load_state_dict(float32_state)
    metrics = {
        "task": args.task,
        "command": "python training/train_classifier.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "num_train_images": len(train_images),
        "num_eval_images": len(eval_images),
        "num_epochs": num_epochs,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "saved_dtype": str(save_dtype).removeprefix("torch."),
        "held_out_accuracy": accuracy_fp16 if lossless else accuracy,
        "held_out_predictions_changed_by_float16": changed,
        "train_seconds": round(time.time() - start_time, 1),
    }
    save(model, metrics, args.output_dir)
    print(f"saved to {args.output_dir} ({metrics['train_seconds']} s)")
    return metrics


def save(model: AttributeClassifier, metrics: dict, output_dir: str) -> None:
    """Writes the classifier (`save_pretrained`) and `training_metrics.json` into `output_dir` (the shipped weights'
    folder by default) without ever leaving a half-written file there: everything is written to a hidden folder
    beside it first (`.<name>.tmp`, never packaged), then each file renamed into place (atomic), the metrics last."""
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    tmp = os.path.join(parent, f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed run's leftover
    try:
        model.save_pretrained(tmp)
        with open(os.path.join(tmp, "training_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
        os.makedirs(output_dir, exist_ok=True)
        names = sorted(os.listdir(tmp), key=lambda file: file == "training_metrics.json")
        for file in names:
            os.replace(os.path.join(tmp, file), os.path.join(output_dir, file))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
