"""Procedural cartoon faces: determinism, attributes, captions (template exact, parse round trip), outputs."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from sdscratch.data import cartoon_faces as cf
from sdscratch.data.captions import ANY, attributes_match, check_attributes

TEMPLATE_RE = re.compile(
    r"^Cartoon face (with|without) glasses, (with|without) facial hair, ([a-z-]+) hair and with ([a-z]+) skin$"
)


def test_attribute_vocabulary():
    a = cf.ATTRIBUTES
    assert a["glasses"][0] == a["facial_hair"][0] == a["glasses_color"][0] == "none"
    assert len(a["glasses"]) >= 4 and len(a["facial_hair"]) >= 4 and len(a["glasses_color"]) >= 4
    for color in ("white", "orange", "brown", "black", "whitish-yellow", "yellow", "dark-orange"):
        assert color in a["hair_color"]
    assert len(a["hair_color"]) >= 9
    assert {"bald", "short", "long"} <= set(a["hair_style"]) and len(a["hair_style"]) >= 8
    assert {"white", "yellow", "dark", "brown"} <= set(a["skin"])
    assert len(a["eye_color"]) >= 4 and len(a["face_shape"]) >= 3 and len(a["mouth"]) >= 3
    assert cf.CAPTION_ATTRIBUTES == ("glasses", "facial_hair", "hair_color", "skin")
    # Every named colour is drawn, and hair colours are far apart in RGB (readable at 64x64).
    assert set(cf.HAIR_RGB) == set(a["hair_color"]) and set(cf.SKIN_RGB) == set(a["skin"])
    rgb = np.array(list(cf.HAIR_RGB.values()), dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 60


def test_seed_to_face_is_pure():
    image_a, attrs_a = cf.generate_face(123)
    image_b, attrs_b = cf.generate_face(123)
    assert attrs_a == attrs_b == cf.sample_attributes(123)
    assert np.array_equal(np.asarray(image_a), np.asarray(image_b))
    image_c, _ = cf.generate_face(124)
    assert not np.array_equal(np.asarray(image_a), np.asarray(image_c))
    # Pinned values: a change here changes every data set built from seeds (bump deliberately, never by accident).
    assert cf.sample_attributes(0) == {
        "glasses": "round", "glasses_color": "green", "facial_hair": "goatee", "hair_color": "whitish-yellow",
        "hair_style": "long", "skin": "dark", "eye_color": "brown", "face_shape": "oval", "mouth": "frowning",
    }  # fmt: skip


def test_render_outputs_and_jitter():
    attributes = cf.sample_attributes(5)
    for size in (32, 64, 100):
        image = cf.render_face(attributes, size=size, seed=5)
        assert image.mode == "RGB" and image.size == (size, size)
        assert image.getpixel((0, 0)) == cf.BACKGROUND
    # Same attributes, different jitter seeds: not pixel-identical. seed=None: the canonical face.
    a, b = (np.asarray(cf.render_face(attributes, seed=s)) for s in (1, 2))
    assert not np.array_equal(a, b)
    assert np.array_equal(np.asarray(cf.render_face(attributes)), np.asarray(cf.render_face(attributes)))


def test_sampled_attributes_are_valid_and_balanced():
    samples = [cf.sample_attributes(s) for s in range(600)]
    for a in samples:
        check_attributes(a)
    for name in ("glasses", "facial_hair"):
        share = np.mean([a[name] == "none" for a in samples])
        assert 0.4 < share < 0.6, name
    for name, values in cf.ATTRIBUTES.items():
        assert {a[name] for a in samples} == set(values), name


def test_bad_attributes():
    attributes = cf.sample_attributes(0)
    with pytest.raises(ValueError, match="hair_color.*purple"):
        cf.render_face({**attributes, "hair_color": "purple"})
    with pytest.raises(ValueError, match="missing 'skin'"):
        cf.render_face({k: v for k, v in attributes.items() if k != "skin"})
    with pytest.raises(ValueError, match="style"):
        cf.make_caption(attributes, style="poem")


def test_template_caption_exact():
    a = {**cf.sample_attributes(0), "glasses": "none", "glasses_color": "none", "facial_hair": "beard"}
    a.update(hair_color="dark-orange", skin="brown")
    assert cf.make_caption(a) == "Cartoon face without glasses, with facial hair, dark-orange hair and with brown skin"
    for s in range(300):
        a = cf.sample_attributes(s)
        caption = cf.make_caption(a, "template")
        m = TEMPLATE_RE.match(caption)
        assert m, caption
        assert m.groups() == (
            "without" if a["glasses"] == "none" else "with",
            "without" if a["facial_hair"] == "none" else "with",
            a["hair_color"],
            a["skin"],
        )


@pytest.mark.parametrize("style", ["template", "rich", "mixed"])
def test_caption_parse_round_trip(style):
    named = set()
    for s in range(400):
        a = cf.sample_attributes(s)
        caption = cf.make_caption(a, style, seed=s)
        parsed = cf.parse_caption(caption)
        assert all(attributes_match(a, parsed).values()), (caption, parsed, a)
        if style == "template":
            assert set(parsed) >= set(cf.CAPTION_ATTRIBUTES), caption
        named |= {k for k, v in parsed.items() if v != ANY}
    if style != "template":  # rich captions name every attribute, with its exact value, somewhere
        assert named == set(cf.ATTRIBUTES)


def test_mixed_captions_are_template_or_rich_by_seed():
    a = cf.sample_attributes(3)
    template, rich = cf.make_caption(a, "template"), [cf.make_caption(a, "rich", seed=s) for s in range(60)]
    mixed = [cf.make_caption(a, "mixed", seed=s) for s in range(60)]
    kinds = ["template" if m == template else "rich" if m == r else "other" for m, r in zip(mixed, rich)]
    assert "other" not in kinds and 15 < kinds.count("template") < 45
    assert mixed == [cf.make_caption(a, "mixed", seed=s) for s in range(60)]  # deterministic


def test_rich_captions_vary_and_are_deterministic():
    a = cf.sample_attributes(7)
    captions = {cf.make_caption(a, "rich", seed=s) for s in range(20)}
    assert len(captions) > 10
    assert cf.make_caption(a, "rich", seed=3) == cf.make_caption(a, "rich", seed=3)
    assert cf.make_caption(a, "rich") == cf.make_caption(a, "rich")
    assert all("with with" not in c and "with without" not in c for c in captions)


def test_rich_captions_never_name_eyes_hidden_by_sunglasses():
    # The eyes are not visible behind sunglasses, so no caption (and no adherence prompt) may ask for them.
    faces = [cf.sample_attributes(seed) for seed in range(400)]
    shades = [a for a in faces if a["glasses"] == "sunglasses"]
    assert len(shades) > 20
    assert all("eyes" not in cf.make_caption(a, "rich", seed=s) for a in shades for s in range(5))
    others = [a for a in faces if a["glasses"] != "sunglasses"]
    assert any("eyes" in cf.make_caption(a, "rich", seed=i) for i, a in enumerate(others))


def test_parse_free_form_prompt():
    parsed = cf.parse_caption("a smiling cartoon face with blue eyes and red round glasses, whitish-yellow hair")
    assert parsed == {
        "glasses": "round", "glasses_color": "red", "eye_color": "blue", "mouth": "smiling",
        "hair_color": "whitish-yellow",
    }  # fmt: skip
    parsed = cf.parse_caption("Cartoon face with glasses, without facial hair, black hair and with dark skin")
    assert parsed == {"glasses": ANY, "facial_hair": "none", "hair_color": "black", "skin": "dark"}
    assert attributes_match({"glasses": "sunglasses", "facial_hair": "beard"}, {"glasses": ANY, "facial_hair": "none"}) == {
        "glasses": True, "facial_hair": False,
    }  # fmt: skip


def test_attribute_caption_names_one_attribute_and_parses_back():
    from sdscratch.data import attribute_caption

    for seed in range(200):
        a = cf.sample_attributes(seed)
        for name in cf.ATTRIBUTES:
            caption = attribute_caption(a, name)
            parsed = cf.parse_caption(caption)
            assert parsed[name] == a[name], (caption, a)
            # nothing else, except the companion its phrase needs
            companion = {"hair_style": {"hair_color"}, "hair_color": {"hair_style"}}.get(name, set())
            companion |= {"glasses_color"} if name == "glasses" and a["glasses"] == "none" else set()
            companion |= {"glasses"} if name == "glasses_color" else set()
            assert set(parsed) <= {name} | companion, (caption, parsed)
    a = cf.sample_attributes(0)
    assert attribute_caption({**a, "mouth": "smiling"}, "mouth") == "a cartoon face with a smile"
    with pytest.raises(ValueError, match="name='hat' is not one of"):
        attribute_caption(a, "hat")
    with pytest.raises(ValueError, match="attributes\\['mouth'\\] = 'grin' is not one of"):
        attribute_caption({**a, "mouth": "grin"}, "mouth")


def test_datasets_dataset():
    ds = cf.cartoon_faces_dataset(6, size=32, seed=1, caption_style="rich")
    assert ds.column_names == ["image", "text", *cf.ATTRIBUTES]
    row = ds[2]
    assert row["image"].mode == "RGB" and row["image"].size == (32, 32)
    image, attributes = cf.generate_face(cf.face_seed(1, 2), size=32)
    assert np.array_equal(np.asarray(row["image"]), np.asarray(image))  # PNG is lossless
    assert {k: row[k] for k in cf.ATTRIBUTES} == attributes
    assert row["text"] == cf.make_caption(attributes, "rich", seed=cf.face_seed(1, 2))
    other = cf.cartoon_faces_dataset(6, size=32, seed=2)
    assert ds["hair_color"] != other["hair_color"] or ds["skin"] != other["skin"]


def test_several_captions_per_face():
    one = cf.cartoon_faces_dataset(6, size=16, seed=1, caption_style="mixed")
    ds = cf.cartoon_faces_dataset(6, size=16, seed=1, caption_style="mixed", captions_per_image=5)
    assert ds.column_names == ["image", "text", *cf.ATTRIBUTES, "all_captions"] and ds["text"] == one["text"]
    assert "all_captions" not in one.column_names  # one caption per face: the data set as before
    for row in ds:
        captions, attributes = row["all_captions"], {k: row[k] for k in cf.ATTRIBUTES}
        assert len(captions) == 5 and captions[0] == row["text"]
        for caption in captions:  # every caption describes this face
            assert all(cf.attributes_match(attributes, cf.parse_caption(caption)).values()), caption
    assert len({c for row in ds["all_captions"] for c in row}) > 20  # further draws, not copies
    assert cf.face_captions(ds[0], "template", 3, captions_per_image=2) == [cf.make_caption(ds[0])] * 2
    with pytest.raises(ValueError, match="captions_per_image must be >= 1, got 0"):
        cf.cartoon_faces_dataset(2, captions_per_image=0)


def test_torch_dataset():
    ds = cf.CartoonFacesTorchDataset(3, size=32, seed=1)
    item = ds[1]
    assert len(ds) == 3 and item["pixel_values"].shape == (3, 32, 32) and item["pixel_values"].dtype == torch.float32
    assert -1.0 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1.0
    assert TEMPLATE_RE.match(item["text"]) and item["hair_color"] in cf.ATTRIBUTES["hair_color"]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and len(batch["text"]) == 3
    with pytest.raises(IndexError):
        ds[3]


def test_write_imagefolder_and_cli(tmp_path):
    cf.main(["--output_dir", str(tmp_path), "--num_images", "3", "--resolution", "32"])
    lines = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert [line["file_name"] for line in lines] == ["000000.png", "000001.png", "000002.png"]
    assert all((tmp_path / line["file_name"]).exists() for line in lines)
    assert lines[1]["attributes"] == cf.sample_attributes(cf.face_seed(0, 1))
    assert lines[1]["text"] == cf.make_caption(lines[1]["attributes"])


def test_write_imagefolder_checks_arguments_before_writing(tmp_path, capsys):
    cf.write_imagefolder(str(tmp_path), 2, size=16)
    metadata = (tmp_path / "metadata.jsonl").read_text()
    for kwargs, error in [
        ({"size": 4}, "size must be an integer >= 8, got 4"),
        ({"caption_style": "poem"}, "caption_style='poem' is not one of"),
        ({"num_images": -1}, "num_images must be an integer >= 0, got -1"),
    ]:
        with pytest.raises(ValueError, match=error):
            cf.write_imagefolder(str(tmp_path), **{"num_images": 2, **kwargs})
        assert (tmp_path / "metadata.jsonl").read_text() == metadata  # untouched, not emptied
    for flags, error in [
        (["--resolution", "4"], "--resolution must be >= 8"),
        (["--num_images", "-2"], "--num_images"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cf.main(["--output_dir", str(tmp_path), "--num_images", "2", *flags])
        assert exit_info.value.code == 2 and error in capsys.readouterr().err  # an argparse error, no traceback
        assert (tmp_path / "metadata.jsonl").read_text() == metadata
    assert not list(tmp_path.glob("*.tmp"))


def test_write_imagefolder_under_a_file_is_a_named_error(tmp_path, capsys):
    (tmp_path / "faces.txt").write_text("not a folder")
    for output_dir in (tmp_path / "faces.txt", tmp_path / "faces.txt" / "faces"):
        with pytest.raises(ValueError, match=r"output_dir=.*faces.txt.* cannot be a folder"):
            cf.write_imagefolder(str(output_dir), 1, size=16)
    from sdscratch import cli

    with pytest.raises(SystemExit) as exit_info:  # `sdscratch faces`: exit 2 and one line, not a traceback
        cli.main(["faces", "--output_dir", str(tmp_path / "faces.txt" / "faces"), "--num_images", "1"])
    assert exit_info.value.code == 2 and "sdscratch faces: error: output_dir=" in capsys.readouterr().err


def test_torch_dataset_checks_arguments_on_construction():
    with pytest.raises(ValueError, match="size must be an integer >= 8, got 4"):
        cf.CartoonFacesTorchDataset(3, size=4)
    with pytest.raises(ValueError, match="num_images must be an integer >= 0, got -3"):
        cf.CartoonFacesTorchDataset(-3)
    with pytest.raises(ValueError, match="caption_style='poem'"):
        cf.CartoonFacesTorchDataset(3, caption_style="poem")


def test_numpy_integer_sizes_are_accepted():
    attributes = cf.sample_attributes(3)
    image = cf.render_face(attributes, size=np.int64(16), seed=3)
    assert np.array_equal(np.asarray(image), np.asarray(cf.render_face(attributes, size=16, seed=3)))
    ds = cf.cartoon_faces_dataset(np.int32(2), size=np.int64(16))
    assert np.array_equal(np.asarray(ds[1]["image"]), np.asarray(cf.cartoon_faces_dataset(2, size=16)[1]["image"]))
    assert len(cf.CartoonFacesTorchDataset(np.int64(2), size=np.int16(16))) == 2
    with pytest.raises(ValueError, match="size must be an integer >= 8, got True"):
        cf.render_face(attributes, size=True)


def test_torch_dataset_items_are_the_data_set_rows():
    # same faces, captions and attributes as `cartoon_faces_dataset` (start and caption seed included), pixels 0..255
    # mapped linearly to [-1, 1]
    ds = cf.CartoonFacesTorchDataset(3, size=16, seed=1, caption_style="rich", start=5)
    rows = cf.cartoon_faces_dataset(3, size=16, seed=1, caption_style="rich", start=5)
    for i in range(3):
        item, row = ds[i], rows[i]
        expected = torch.from_numpy(np.asarray(row["image"], dtype=np.float32)).permute(2, 0, 1) * (2 / 255) - 1
        assert torch.allclose(item["pixel_values"], expected, atol=1e-6)
        assert item["text"] == row["text"] and {k: item[k] for k in cf.ATTRIBUTES} == {
            k: row[k] for k in cf.ATTRIBUTES
        }
    assert ds[0]["text"] != cf.CartoonFacesTorchDataset(1, size=16, seed=1, caption_style="rich")[0]["text"]


def test_write_imagefolder_numbers_files_from_start(tmp_path):
    cf.write_imagefolder(str(tmp_path), 2, size=16, seed=3, start=7)
    lines = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert [line["file_name"] for line in lines] == ["000007.png", "000008.png"]
    image, attributes = cf.generate_face(cf.face_seed(3, 8), size=16)
    assert lines[1]["attributes"] == attributes
    assert np.array_equal(np.asarray(Image.open(tmp_path / "000008.png")), np.asarray(image))


def test_start_outside_the_seeds_face_range_is_refused(tmp_path):
    """face_seed packs (seed, index) into seed * 2**32 + index: start=-1 of seed 0 silently drew seed -1's last face."""
    for start, num_images in ((-1, 2), (2**32 - 1, 2), (0.5, 1)):
        for make, args in (
            (cf.cartoon_faces_dataset, ()),
            (cf.CartoonFacesTorchDataset, ()),
            (cf.write_imagefolder, (str(tmp_path / "out"),)),
        ):
            with pytest.raises(ValueError, match=r"start must be an integer in \[0, 2\*\*32 - num_images\]"):
                make(*args, num_images=num_images, size=16, start=start)
    assert not (tmp_path / "out").exists()
    assert len(cf.cartoon_faces_dataset(1, size=16, start=2**32 - 1)) == 1  # the seed's last face
