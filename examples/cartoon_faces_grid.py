"""Draw a grid of the built-in procedural cartoon faces with their captions (docs/cartoon_faces_grid.png).

    python examples/cartoon_faces_grid.py --output docs/cartoon_faces_grid.png

It draws the training data (`sdscratch.data.cartoon_faces`), not samples of a model: the only example without
`--model_path`. Each face is shown above its template caption (black) and a rich caption (blue).
"""

import time

START = time.perf_counter()  # the wall time reported includes the imports below

import argparse  # noqa: E402
import textwrap  # noqa: E402

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from sdscratch.data.cartoon_faces import face_seed, generate_face, make_caption  # noqa: E402


def face_grid(num_faces: int = 64, columns: int = 8, size: int = 64, zoom: int = 2, seed: int = 0) -> Image.Image:
    """Faces ``0..num_faces-1`` of data set ``seed`` at ``size`` (shown ``zoom`` times larger, nearest
    neighbour, so the real pixels are visible), each above its template caption and a rich caption."""
    font = ImageFont.load_default(size=11)
    cell_w, text_h = max(size * zoom, 232), 96
    rows = -(-num_faces // columns)
    grid = Image.new("RGB", (columns * cell_w, rows * (size * zoom + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i in range(num_faces):
        s = face_seed(seed, i)
        image, attributes = generate_face(s, size=size)
        x, y = (i % columns) * cell_w, (i // columns) * (size * zoom + text_h)
        grid.paste(
            image.resize((size * zoom, size * zoom), Image.Resampling.NEAREST), (x + (cell_w - size * zoom) // 2, y)
        )
        template = [(line, "black") for line in textwrap.wrap(make_caption(attributes), 40)]
        rich = [(line, (40, 90, 160)) for line in textwrap.wrap(make_caption(attributes, "rich", s), 40)]
        for k, (line, color) in enumerate((template + rich)[:7]):
            draw.text((x + 4, y + size * zoom + 2 + 13 * k), line, fill=color, font=font)
    return grid


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/cartoon_faces_grid.png")
    parser.add_argument("--seed", type=int, default=0, help="which built-in data set")
    parser.add_argument("--num_faces", type=int, default=64)
    parser.add_argument("--columns", type=int, default=8)
    args = parser.parse_args(argv)
    if args.num_faces < 1 or args.columns < 1:
        raise SystemExit("--num_faces and --columns must be at least 1")

    from sdscratch.demo import check_output_path, save_atomic

    check_output_path(args.output)
    path = save_atomic(face_grid(num_faces=args.num_faces, columns=args.columns, seed=args.seed), args.output)
    print(f"wrote {path} ({args.num_faces} faces) in {time.perf_counter() - START:.1f} s")
    return path


if __name__ == "__main__":
    main()
