"""Draw a grid of generated cartoon faces with their captions (docs/cartoon_faces_grid.png).

python examples/cartoon_faces_grid.py --output docs/cartoon_faces_grid.png
"""

import argparse
import textwrap

from PIL import Image, ImageDraw, ImageFont

from sdscratch.data.cartoon_faces import face_seed, generate_face, make_caption


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/cartoon_faces_grid.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    face_grid(seed=args.seed).save(args.output)
    print(f"wrote {args.output}")
