"""Draws docs/architecture.png from the real model configs: levels, channels, resolutions, attention, parameters.

    python docs/make_architecture_diagram.py        # the shipped model if present, else the training recipe
    python docs/make_architecture_diagram.py --model_path path/to/pipeline --output my_model.png

Every number in the picture is read from instantiated models (`SmallVAE`, `SmallUNet`, `CLIPTextModel` built from
their configs, weights not needed), so the diagram cannot drift from the code.
"""

import argparse
import json
import os
import sys

from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, HEIGHT = 1900, 940
COLORS = {
    "resnet": (207, 226, 255),
    "attention": (255, 214, 170),
    "io": (225, 240, 215),
    "text": (240, 222, 250),
    "scheduler": (255, 245, 200),
    "edge": (60, 60, 70),
    "cross": (214, 110, 20),
    "skip": (120, 120, 135),
}


def font(size):
    return ImageFont.load_default(size=size)


def millions(module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


def load_models(model_path, recipe):
    """(vae, unet, text_encoder, vocabulary label, scheduler name, source) of a pipeline folder or a recipe.

    Only configs are read; the models are built from them with random weights (parameter counts need no weights).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdscratch import SmallUNet, SmallVAE
    from sdscratch.text import default_text_encoder_config

    if model_path is None:
        from sdscratch.pretrained import is_available, pretrained

        model_path = pretrained("cartoon-faces") if is_available("cartoon-faces") else None
    if model_path is not None:
        if not os.path.isdir(os.path.join(model_path, "vae")):
            raise SystemExit(
                f"{model_path}: the diagram needs a latent pipeline folder (with vae/, unet/, text_encoder/)."
            )
        vae = SmallVAE.from_config(SmallVAE.load_config(model_path, subfolder="vae"))
        unet = SmallUNet.from_config(SmallUNet.load_config(model_path, subfolder="unet"))
        text_config = CLIPTextConfig.from_pretrained(os.path.join(model_path, "text_encoder"))
        with open(os.path.join(model_path, "scheduler", "scheduler_config.json")) as f:
            scheduler = json.load(f)["_class_name"]
        vocab = f"vocab {text_config.vocab_size}"
        inside = os.path.abspath(model_path).startswith(ROOT + os.sep)  # a repo-relative path in the drawing
        source = os.path.relpath(model_path, ROOT) if inside else model_path
    else:
        # what training/train_vae.py (SmallVAE defaults) and training/train_unet.py (its JSON recipe) build
        with open(recipe) as f:
            config = json.load(f)
        vae = SmallVAE()
        tokenizer = config.get("tokenizer", {})
        vocab_size, length = tokenizer.get("vocab_size", 1024), tokenizer.get("model_max_length", 32)
        text_config = default_text_encoder_config(
            vocab_size, max_position_embeddings=length, **config.get("text_encoder", {})
        )
        latent = vae.config.sample_size // vae.downsample_factor
        unet = SmallUNet(
            **{
                **config.get("unet", {}),
                "sample_size": latent,
                "in_channels": vae.config.latent_channels,
                "out_channels": vae.config.latent_channels,
                "cross_attention_dim": text_config.hidden_size,
            }
        )
        scheduler = "DPMSolverMultistepScheduler"
        vocab = f"vocab <= {vocab_size}, learned from the captions"
        source = f"SmallVAE defaults + {os.path.relpath(recipe)}"
    return vae, unet, CLIPTextModel(text_config), vocab, text_config.max_position_embeddings, scheduler, source


class Canvas:
    def __init__(self):
        self.image = Image.new("RGB", (WIDTH, HEIGHT), "white")
        self.draw = ImageDraw.Draw(self.image)

    def box(self, x, y, w, h, lines, fill, title_size=17, size=15):
        """A rounded box with a bold-ish first line; returns its (left, top, right, bottom)."""
        self.draw.rounded_rectangle([x, y, x + w, y + h], radius=8, fill=fill, outline=COLORS["edge"], width=2)
        total = title_size + (len(lines) - 1) * (size + 4)
        ty = y + (h - total) / 2 - 2
        for i, line in enumerate(lines):
            f = font(title_size if i == 0 else size)
            tw = self.draw.textlength(line, font=f)
            self.draw.text((x + (w - tw) / 2, ty), line, fill="black", font=f)
            ty += (title_size if i == 0 else size) + 4
        return x, y, x + w, y + h

    def arrow(self, start, end, color=COLORS["edge"], width=2, dashed=False):
        (x0, y0), (x1, y1) = start, end
        if dashed:
            steps = max(1, int(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 // 10))
            for i in range(0, steps, 2):
                a, b = i / steps, min((i + 1) / steps, 1)
                self.draw.line(
                    [x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b, y0 + (y1 - y0) * b],
                    fill=color,
                    width=width,
                )
        else:
            self.draw.line([x0, y0, x1, y1], fill=color, width=width)
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-6)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        self.draw.polygon(
            [(x1, y1), (x1 - 11 * ux + 5 * uy, y1 - 11 * uy - 5 * ux), (x1 - 11 * ux - 5 * uy, y1 - 11 * uy + 5 * ux)],
            fill=color,
        )

    def path(self, points, color=COLORS["edge"], width=2):
        """Straight segments through `points`, with an arrow head at the last one."""
        for start, end in zip(points[:-2], points[1:-1]):
            self.draw.line([*start, *end], fill=color, width=width)
        self.arrow(points[-2], points[-1], color=color, width=width)

    def text(self, x, y, line, size=16, color="black", center=False):
        f = font(size)
        if center:
            x -= self.draw.textlength(line, font=f) / 2
        self.draw.text((x, y), line, fill=color, font=f)


def vae_column(c, vae, x, top, decoder=False):
    """Encoder (image -> latent, downward) or decoder (latent -> image, downward) of the SmallVAE."""
    cfg = vae.config
    w, h, gap = 330, 62, 24
    part = vae.decoder if decoder else vae.encoder
    res = [cfg.sample_size // 2**i for i in range(len(cfg.block_out_channels))]
    latent = f"latent {res[-1]}x{res[-1]}x{cfg.latent_channels}"
    image = f"image {cfg.sample_size}x{cfg.sample_size}x{cfg.in_channels}"
    boxes = [([latent + " / scaling_factor"], "io")] if decoder else [([image, "in [-1, 1]"], "io")]
    mid = (
        f"mid block  {res[-1]}x{res[-1]}  {cfg.block_out_channels[-1]} ch",
        "ResNet + self-attention + ResNet" if cfg.mid_block_add_attention else "ResNet + ResNet",
        f"{millions(part.mid_block)} params",
    )
    levels = list(range(len(cfg.block_out_channels)))
    blocks = part.up_blocks if decoder else part.down_blocks
    level_boxes = []
    for i, block in zip(reversed(levels) if decoder else levels, blocks):
        n = cfg.layers_per_block + (1 if decoder else 0)
        resample = (" + upsample x2" if i > 0 else "") if decoder else (" + downsample /2" if i < levels[-1] else "")
        lines = [
            f"level {i}  {res[i]}x{res[i]}  {cfg.block_out_channels[i]} ch",
            f"{n} ResNet{resample}",
            f"{millions(block)} params",
        ]
        level_boxes.append((lines, "resnet"))
    middle = [(list(mid), "attention" if cfg.mid_block_add_attention else "resnet")]
    boxes += (middle + level_boxes) if decoder else (level_boxes + middle)
    boxes += [([image, "decoded"], "io")] if decoder else [([latent, "sample x scaling_factor"], "io")]
    y, rects = top, []
    for lines, kind in boxes:
        rect = c.box(x, y, w, h if len(lines) > 2 else 48, lines, COLORS[kind])
        if rects:
            c.arrow(((x + w / 2), rects[-1][3]), ((x + w / 2), rect[1]))
        rects.append(rect)
        y = rect[3] + gap
    return rects


def unet_block(c, unet, x, top):
    """The SmallUNet as a U: down levels descending on the left, mid block at the bottom, up levels on the right.

    Returns the attention boxes (for the cross-attention arrows), the mid block box and the x of the centre line.
    """
    from sdscratch.models.unet_blocks import num_heads_for

    cfg = unet.config
    n = len(cfg.block_out_channels)
    w, h, row = 330, 74, 112
    left, right, centre = x, x + 500, x + 415
    attention = []
    c.box(
        left,
        top,
        w,
        48,
        ["noisy latents x_t + timestep t", f"{cfg.sample_size}x{cfg.sample_size}x{cfg.in_channels}"],
        COLORS["io"],
    )
    c.box(
        right, top, w, 48, ["predicted noise", f"{cfg.sample_size}x{cfg.sample_size}x{cfg.out_channels}"], COLORS["io"]
    )
    cross_only_levels = cfg.cross_attention_levels or [False] * n
    for i in range(n):
        res, ch, cross_only = cfg.sample_size // 2**i, cfg.block_out_channels[i], cross_only_levels[i]
        attn = cfg.transformer_levels[i] or cross_only
        heads = num_heads_for(ch, cfg.attention_head_dim) if attn else 0
        kind = "cross-attention" if cross_only else "Transformer"
        layer = f"ResNet + {kind} ({heads} head{'s' * (heads > 1)})" if attn else "ResNet"
        y = top + 80 + i * row
        for side, count, block in (
            (left, cfg.layers_per_block, unet.down_blocks[i]),
            (right, cfg.layers_per_block + 1, unet.up_blocks[n - 1 - i]),
        ):
            down = side == left
            resample = (", down /2" if i < n - 1 else "") if down else (", up x2" if i > 0 else "")
            lines = [
                f"{'down' if down else 'up'} {i}  {res}x{res}  {ch} ch",
                f"{count} x {layer}{resample}",
                f"{millions(block)} params",
            ]
            rect = c.box(side, y, w, h, lines, COLORS["attention" if attn else "resnet"])
            if attn:
                attention.append(rect)
        c.arrow((left + w, y + 22), (right, y + 22), color=COLORS["skip"], dashed=True)
        c.text(left + w + 12, y + 2, f"skip ({cfg.skip_connection})", size=14, color=COLORS["skip"])
        if i < n - 1:
            c.arrow((left + w / 2, y + h), (left + w / 2, y + row))
            c.arrow((right + w / 2, y + row), (right + w / 2, y + h))
    c.arrow((left + w / 2, top + 48), (left + w / 2, top + 80))
    c.arrow((right + w / 2, top + 80), (right + w / 2, top + 48))
    res, ch = cfg.sample_size // 2 ** (n - 1), cfg.block_out_channels[-1]
    heads = num_heads_for(ch, cfg.attention_head_dim)
    y_mid = top + 80 + n * row - 10
    mid = c.box(
        centre - 205,
        y_mid,
        410,
        h,
        [
            f"mid block  {res}x{res}  {ch} ch",
            f"ResNet + Transformer ({heads} heads) + ResNet",
            f"{millions(unet.mid_block)} params",
        ],
        COLORS["attention"],
    )
    y_last = top + 80 + (n - 1) * row + h
    c.path([(left + w / 2, y_last), (left + w / 2, y_mid + h / 2), (mid[0], y_mid + h / 2)])
    c.path([(mid[2], y_mid + h / 2), (right + w / 2, y_mid + h / 2), (right + w / 2, y_last)])
    return attention, mid, centre


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", default=None, help="a pipeline folder (default: the shipped model, if any)")
    parser.add_argument(
        "--recipe",
        default=os.path.join(ROOT, "training", "configs", "cartoon-faces.json"),
        help="without a model: the train_unet.py --unet_config JSON to draw",
    )
    parser.add_argument(
        "--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "architecture.png")
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from sdscratch.demo import check_output_path, save_atomic

    check_output_path(args.output)  # a folder or a name without an image extension fails now, not after drawing
    vae, unet, text_encoder, vocab, length, scheduler, source = load_models(args.model_path, args.recipe)
    tcfg = text_encoder.config

    c = Canvas()
    total = sum(sum(p.numel() for p in m.parameters()) for m in (vae, unet, text_encoder)) / 1e6
    c.text(30, 18, "sdscratch CartoonFacePipeline: latent diffusion, drawn from the model configs", size=26)
    c.text(
        30,
        52,
        f"source: {source}   |   total {total:.2f}M parameters: SmallVAE {millions(vae)}, "
        f"SmallUNet {millions(unet)}, CLIP text encoder {millions(text_encoder)}",
        size=17,
    )

    top, ex, ux, dx = 250, 40, 520, 1530  # encoder, UNet, decoder columns
    c.text(ex + 165, top - 34, f"SmallVAE encoder ({millions(vae.encoder)})", size=19, center=True)
    encoder = vae_column(c, vae, ex, top)
    c.text(dx + 165, top - 34, f"SmallVAE decoder ({millions(vae.decoder)})", size=19, center=True)
    vae_column(c, vae, dx, top, decoder=True)
    c.text(ux, top - 34, f"SmallUNet ({millions(unet)})", size=19)
    attention, mid, centre = unet_block(c, unet, ux, top)

    # text encoder above the UNet; its hidden states reach every transformer through cross-attention (orange)
    text = c.box(
        centre - 320,
        95,
        640,
        92,
        [
            f"prompt -> CLIP BPE tokenizer ({vocab}), {length} tokens",
            f"CLIPTextModel: {tcfg.num_hidden_layers} layers x {tcfg.hidden_size} wide, {tcfg.num_attention_heads} heads "
            f"({millions(text_encoder)} params)",
            f"encoder_hidden_states (B, {length}, {tcfg.hidden_size}) -> cross-attention (orange)",
        ],
        COLORS["text"],
        title_size=16,
        size=15,
    )
    c.draw.line([centre, text[3], centre, mid[1]], fill=COLORS["cross"], width=3)
    c.arrow((centre, mid[1] - 12), (centre, mid[1]), color=COLORS["cross"], width=3)
    for rect in attention:
        y = rect[3] - 16
        c.arrow((centre, y), (rect[2] if rect[0] < centre else rect[0], y), color=COLORS["cross"], width=3)

    # the sampling loop: scheduler under the UNet, from the encoder (training, img2img) and to the decoder
    sy = mid[3] + 28
    sched = c.box(
        centre - 280,
        sy,
        560,
        74,
        [
            f"scheduler: {scheduler} (any diffusers scheduler)",
            "x_t -> x_t-1 from the predicted noise; classifier-free guidance:",
            "eps = eps(uncond) + w * (eps(cond) - eps(uncond))",
        ],
        COLORS["scheduler"],
        title_size=16,
    )
    c.text(
        centre,
        sched[3] + 8,
        "repeat for each step: x_t-1 goes back into the UNet",
        size=15,
        color=COLORS["skip"],
        center=True,
    )
    c.path([(sched[0], sched[1] + 37), (ux - 25, sched[1] + 37), (ux - 25, top + 14), (ux, top + 14)])
    c.path([(ux + 830, top + 24), (ux + 860, top + 24), (ux + 860, sched[1] + 15), (sched[2], sched[1] + 15)])
    c.path([(sched[2], sched[3] - 15), (dx - 40, sched[3] - 15), (dx - 40, top + 24), (dx, top + 24)])
    c.text(sched[2] + 12, sched[3] - 40, "last step: x_0", size=15)
    latent = encoder[-1]
    c.path([(latent[2], latent[1] + 24), (ux - 60, latent[1] + 24), (ux - 60, top + 36), (ux, top + 36)])
    for k, line in enumerate(("training and", "img2img: latents", "+ noise (forward", "diffusion)")):
        c.text(latent[2] + 8, latent[1] + 34 + 17 * k, line, size=14)

    # legend
    ly = HEIGHT - 45
    for i, (kind, label) in enumerate(
        [
            ("resnet", "convolutions only (ResNet blocks)"),
            ("attention", "with attention (self / cross)"),
            ("io", "tensors"),
            ("text", "text conditioning"),
        ]
    ):
        c.draw.rounded_rectangle(
            [30 + i * 360, ly, 60 + i * 360, ly + 22], radius=4, fill=COLORS[kind], outline=COLORS["edge"]
        )
        c.text(70 + i * 360, ly + 2, label, size=16)

    output = save_atomic(c.image, args.output)
    print(f"wrote {output}")
    return output


if __name__ == "__main__":
    main()
