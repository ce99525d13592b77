"""Data throughput: procedural faces per second on one core, and the digits / data set build times.

python benchmarks/bench_data.py
"""

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from sdscratch.data.cartoon_faces import cartoon_faces_dataset, generate_face  # noqa: E402
from sdscratch.data.digits import load_digits_dataset  # noqa: E402
from sdscratch.data.loading import load_image_caption_dataset  # noqa: E402


def _best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    # no options; --help describes the run, and a mistyped flag stops before minutes of measuring
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for size, n in ((64, 1000), (128, 300), (256, 100)):
        seconds = _best_of(lambda size=size, n=n: [generate_face(i, size=size) for i in range(n)])
        rows.append((f"generate_face {size}x{size} (1 process)", f"{n / seconds:,.0f} faces/s"))
    seconds = _best_of(lambda: cartoon_faces_dataset(1000), repeats=2)
    rows.append(("cartoon_faces_dataset(1000) 64x64 -> datasets.Dataset", f"{seconds:.2f} s"))
    load_digits_dataset(split="test", max_samples=1)  # warm imports (sklearn, datasets)
    seconds = _best_of(lambda: load_digits_dataset(size=16, split="train"), repeats=2)
    rows.append(("load_digits_dataset(size=16) train (1,527 rows)", f"{seconds:.2f} s"))
    seconds = _best_of(lambda: load_image_caption_dataset("builtin:digits"), repeats=2)
    rows.append(("load_image_caption_dataset('builtin:digits') (RGB pass)", f"{seconds:.2f} s"))

    width = max(len(name) for name, _ in rows)
    print(f"| {'measurement'.ljust(width)} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
