"""The cartoon-face attribute vocabulary and the captions that name it.

Two caption styles:

- ``"template"``: the ``Skiittoo/cartoon-faces`` template, word for word, so a model trained here answers the
  prompts of one trained on the Hub data set::

      Cartoon face {with|without} glasses, {with|without} facial hair, {HAIR} hair and with {SKIN} skin

- ``"rich"``: free-form sentences naming a random subset of the attributes in varied order and phrasings
  ("a smiling cartoon face with blue eyes and round glasses"), so a model learns free-form prompts.

``parse_caption`` reads either style back. A caption that only says "with glasses" names no kind of glasses:
the parsed value is then ``ANY`` ("any value but none"); ``attributes_match`` understands it.
"""

import random
import re
from typing import Optional

# Attribute name -> value names. The first value of glasses / glasses_color / facial_hair is "none".
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "glasses": ("none", "round", "square", "sunglasses"),
    "glasses_color": ("none", "black", "red", "blue", "green"),
    "facial_hair": ("none", "beard", "moustache", "goatee"),
    "hair_color": (
        "white",
        "whitish-yellow",
        "yellow",
        "orange",
        "dark-orange",
        "red",
        "brown",
        "black",
        "gray",
        "blue",
    ),  # fmt: skip
    "hair_style": ("bald", "short", "long", "bob", "curly", "afro", "mohawk", "bun", "spiky"),
    "skin": ("white", "yellow", "brown", "dark"),
    "eye_color": ("brown", "blue", "green", "gray"),
    "face_shape": ("round", "oval", "square"),
    "mouth": ("smiling", "neutral", "open", "frowning"),
}

# The attributes named by the Skiittoo template.
CAPTION_ATTRIBUTES = ("glasses", "facial_hair", "hair_color", "skin")

CAPTION_STYLES = ("template", "rich", "mixed")

# The column of a data set row's several captions (a list), of which training draws one each time the image is
# used (diffusers' train_text_to_image.py draws from a caption column of lists the same way).
ALL_CAPTIONS = "all_captions"

# Parsed value of an attribute that a caption mentions without naming a kind ("with glasses").
ANY = "any"

TEMPLATE = "Cartoon face {glasses} glasses, {facial_hair} facial hair, {hair_color} hair and with {skin} skin"

# --- rich phrasings. "{c}" = hair colour, "{g}" = glasses colour; every phrase keeps the colour right before
# its noun ("brown hair", "red round glasses") so that parsing is unambiguous.
_SUBJECTS = (
    "a cartoon face",
    "a cartoon portrait",
    "a cartoon character",
    "cartoon face",
    "a drawing of a cartoon face",
)
_MOUTH_ADJECTIVE = {"smiling": "smiling", "frowning": "frowning", "open": "open-mouthed", "neutral": "neutral-faced"}
_MOUTH_PHRASES = {
    "smiling": ("a smile", "a smiling mouth"),
    "neutral": ("a neutral expression", "a straight mouth"),
    "open": ("an open mouth", "a surprised open mouth"),
    "frowning": ("a frown", "a frowning mouth"),
}
_HAIR_PHRASES = {
    "bald": ("a bald head and {c} hair on the sides", "a bald head with a fringe of {c} hair"),
    "short": ("short {c} hair", "{c} hair cut short"),
    "long": ("long {c} hair", "{c} hair worn long"),
    "bob": ("{c} hair in a bob", "bob-cut {c} hair"),
    "curly": ("curly {c} hair", "{c} hair in curls"),
    "afro": ("{c} hair in an afro", "an afro of {c} hair"),
    "mohawk": ("{c} hair in a mohawk", "a mohawk of {c} hair"),
    "bun": ("{c} hair in a bun", "{c} hair tied in a bun"),
    "spiky": ("spiky {c} hair", "{c} hair in spikes"),
}
_GLASSES_NOUN = {"round": "round glasses", "square": "square glasses", "sunglasses": "sunglasses"}
_NO_GLASSES = ("no glasses",)
_FACIAL_HAIR_PHRASES = {
    "none": ("no facial hair", "a clean-shaven chin"),
    "beard": ("a beard", "a full beard"),
    "moustache": ("a moustache", "a thick moustache"),
    "goatee": ("a goatee", "a small goatee"),
}


def check_attributes(attributes: dict) -> None:
    """Raise ``ValueError`` naming the attribute and the allowed values if ``attributes`` is not a full face."""
    for name, values in ATTRIBUTES.items():
        if name not in attributes:
            raise ValueError(f"attributes is missing {name!r}; a face needs all of {list(ATTRIBUTES)}")
        if attributes[name] not in values:
            raise ValueError(f"attributes[{name!r}] = {attributes[name]!r} is not one of {list(values)}")
    if (attributes["glasses"] == "none") != (attributes["glasses_color"] == "none"):
        raise ValueError("glasses_color must be 'none' exactly when glasses is 'none'")


def make_caption(attributes: dict, style: str = "template", seed: Optional[int | str] = None) -> str:
    """Describe a face in words.

    Args:
        attributes: attribute name -> value, as returned by ``sample_attributes``.
        style: ``"template"`` (the Skiittoo template, deterministic), ``"rich"`` (varied, drawn by ``seed``) or
            ``"mixed"`` (template or rich with equal odds, drawn by ``seed``: a model trained on it follows both
            the template prompts and free-form ones).
        seed: chooses the rich caption's subset, order and phrasing (and the mixed style's pick); ``None``
            derives it from the attributes.

    Returns:
        The caption.
    """
    if seed is None:
        seed = "|".join(f"{k}={attributes[k]}" for k in sorted(attributes))
    if style == "mixed":
        style = "template" if random.Random(f"sdscratch-mixed-{seed}").random() < 0.5 else "rich"
    if style == "template":
        return TEMPLATE.format(
            glasses="without" if attributes["glasses"] == "none" else "with",
            facial_hair="without" if attributes["facial_hair"] == "none" else "with",
            hair_color=attributes["hair_color"],
            skin=attributes["skin"],
        )
    if style != "rich":
        raise ValueError(f"style={style!r} is not one of {CAPTION_STYLES}")
    rng = random.Random(f"sdscratch-caption-{seed}")
    return _rich_caption(attributes, rng)


def _rich_caption(a: dict, rng: random.Random) -> str:
    pick = rng.choice
    # Each attribute is named with its own probability: caption ones more often than the others.
    parts = []
    if rng.random() < 0.85:
        parts.append(pick(_HAIR_PHRASES[a["hair_style"]]).format(c=a["hair_color"]))
    if rng.random() < 0.8:
        parts.append(f"{a['skin']} skin")
    if rng.random() < 0.8:
        if a["glasses"] == "none":
            parts.append(pick(_NO_GLASSES))
        elif rng.random() < 0.6:
            parts.append(
                pick(("{g} {n}", "{n} with {g} frames")).format(g=a["glasses_color"], n=_GLASSES_NOUN[a["glasses"]])
            )
        else:
            parts.append(_GLASSES_NOUN[a["glasses"]])
    if rng.random() < 0.75:
        parts.append(pick(_FACIAL_HAIR_PHRASES[a["facial_hair"]]))
    # Sunglasses hide the eyes: a caption never names what the image cannot show (the draw is kept so the
    # rest of the caption is the same either way).
    if rng.random() < 0.5 and a["glasses"] != "sunglasses":
        parts.append(f"{a['eye_color']} eyes")
    if rng.random() < 0.4:
        parts.append(f"a{'n' if a['face_shape'] == 'oval' else ''} {a['face_shape']} face")
    mouth_in_subject = rng.random() < 0.5
    if not mouth_in_subject and rng.random() < 0.6:
        parts.append(pick(_MOUTH_PHRASES[a["mouth"]]))
    rng.shuffle(parts)

    subject = pick(_SUBJECTS)
    if mouth_in_subject:
        adjective = _MOUTH_ADJECTIVE[a["mouth"]]
        article = "an" if adjective[0] in "aeiou" else "a"
        subject = f"{article} {adjective} {subject.removeprefix('a ').removeprefix('drawing of a ')}"
    if not parts:
        return subject
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{subject} {pick(('with', 'with', 'showing'))} {listed}"


def attribute_caption(attributes: dict, name: str) -> str:
    """A free-form caption naming one attribute of a face (``"a cartoon face with blue eyes"``): the prompts of a
    zero-shot probe, one per value, that differ in that attribute only.

    The hair style's phrase also names the hair colour, and the glasses colour's the kind of glasses, as the rich
    captions do; ``parse_caption`` reads ``attributes[name]`` back from the result.

    Args:
        attributes: a face's attributes (all of `ATTRIBUTES`).
        name: the attribute to name, one of `ATTRIBUTES`.

    Returns:
        `str`: the caption.
    """
    if name not in ATTRIBUTES:
        raise ValueError(f"name={name!r} is not one of {tuple(ATTRIBUTES)}")
    check_attributes(attributes)
    a = attributes
    if name in ("hair_style", "hair_color"):
        part = _HAIR_PHRASES[a["hair_style"]][0].format(c=a["hair_color"])
    elif name in ("glasses", "glasses_color") and a["glasses"] == "none":
        part = _NO_GLASSES[0]
    elif name == "glasses":
        part = _GLASSES_NOUN[a["glasses"]]
    elif name == "glasses_color":
        part = f"{a['glasses_color']} {_GLASSES_NOUN[a['glasses']]}"
    elif name == "facial_hair":
        part = _FACIAL_HAIR_PHRASES[a["facial_hair"]][0]
    elif name == "mouth":
        part = _MOUTH_PHRASES[a["mouth"]][0]
    elif name == "face_shape":
        part = f"a{'n' if a['face_shape'] == 'oval' else ''} {a['face_shape']} face"
    else:  # skin, eye_color
        part = f"{a[name]} {'skin' if name == 'skin' else 'eyes'}"
    return f"{_SUBJECTS[0]} with {part}"


def with_attribute_value(attributes: dict, name: str, value: str) -> dict:
    """A copy of a face's `attributes` with `attributes[name] = value`, kept consistent: glasses and their colour
    are "none" together (a face given glasses keeps its colour, or takes the first one).

    Args:
        attributes: a face's attributes (all of `ATTRIBUTES`).
        name: the attribute to set, one of `ATTRIBUTES`.
        value: one of `ATTRIBUTES[name]`.

    Returns:
        `dict`: the new attributes (the argument is not changed).
    """
    if name not in ATTRIBUTES:
        raise ValueError(f"name={name!r} is not one of {tuple(ATTRIBUTES)}")
    if value not in ATTRIBUTES[name]:
        raise ValueError(f"value={value!r} is not one of {list(ATTRIBUTES[name])} (the values of {name!r})")
    face = {**attributes, name: value}
    if name == "glasses":
        colour = face["glasses_color"] if face["glasses_color"] != "none" else ATTRIBUTES["glasses_color"][1]
        face["glasses_color"] = "none" if value == "none" else colour
    elif name == "glasses_color":
        if value == "none":
            face["glasses"] = "none"
        elif face["glasses"] == "none":
            face["glasses"] = ATTRIBUTES["glasses"][1]
    return face


def attribute_probe(attributes: dict, name: str) -> tuple[tuple[str, ...], list[str]]:
    """The values of attribute `name` a face can take and one `attribute_caption` per value, the rest of the face
    kept (`with_attribute_value`): the prompts of a probe that differ in that attribute only. Glasses colour
    probes only the colours of existing frames.

    Returns:
        `tuple`: `(values, captions)`, in the order of `ATTRIBUTES[name]`.
    """
    values = ATTRIBUTES[name][1:] if name == "glasses_color" else ATTRIBUTES[name]
    return values, [attribute_caption(with_attribute_value(attributes, name, value), name) for value in values]


def _alternation(values) -> str:
    # Longest first so that "whitish-yellow" wins over "yellow".
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))


_HAIR_COLOR_RE = re.compile(rf"(?<![\w-])({_alternation(ATTRIBUTES['hair_color'])}) hair\b")
_SKIN_RE = re.compile(rf"\b({_alternation(ATTRIBUTES['skin'])}) skin\b")
_EYE_RE = re.compile(rf"\b({_alternation(ATTRIBUTES['eye_color'])}) eyes\b")
_FACE_RE = re.compile(rf"\b({_alternation(ATTRIBUTES['face_shape'])}) face\b")
_GLASSES_COLOR = _alternation(ATTRIBUTES["glasses_color"][1:])
_GLASSES_COLOR_RE = re.compile(
    rf"\b({_GLASSES_COLOR}) (?:round glasses|square glasses|sunglasses)\b|(?:glasses|sunglasses) with ({_GLASSES_COLOR}) frames\b"
)
_HAIR_STYLE_RE = re.compile(r"\b(bald|short|long|bob|curly|curls|afro|mohawk|bun|spiky|spikes)\b")
_FACIAL_HAIR_RE = re.compile(r"\b(beard|moustache|mustache|goatee)\b")
_MOUTH_RE = re.compile(r"\b(smil\w*|frown\w*|open[ -]mouth\w*|neutral\w*|straight mouth)")


def parse_caption(text: str) -> dict[str, str]:
    """Read the attributes a caption names (either style) back into values.

    Args:
        text: a caption.

    Returns:
        attribute name -> value for each attribute the caption names. ``"with glasses"`` / ``"with facial hair"``
        without a kind give ``ANY``; attributes the caption does not mention are absent.
    """
    t = text.lower()
    out = {}
    if re.search(r"\b(without|no|not wearing) glasses\b", t):
        out["glasses"] = "none"
    elif m := re.search(r"\b(round glasses|square glasses|sunglasses)\b", t):
        out["glasses"] = m.group(1).split()[0]
    elif re.search(r"\bglasses\b", t):
        out["glasses"] = ANY
    if out.get("glasses") == "none":
        out["glasses_color"] = "none"
    elif m := _GLASSES_COLOR_RE.search(t):
        out["glasses_color"] = m.group(1) or m.group(2)

    if re.search(r"\b(without|no) facial hair\b|clean-shaven", t):
        out["facial_hair"] = "none"
    elif m := _FACIAL_HAIR_RE.search(t):
        out["facial_hair"] = {"mustache": "moustache"}.get(m.group(1), m.group(1))
    elif re.search(r"\bfacial hair\b", t):
        out["facial_hair"] = ANY

    if m := _HAIR_COLOR_RE.search(t):
        out["hair_color"] = m.group(1)
    if m := _HAIR_STYLE_RE.search(t):
        out["hair_style"] = {"curls": "curly", "spikes": "spiky"}.get(m.group(1), m.group(1))
    for name, pattern in (("skin", _SKIN_RE), ("eye_color", _EYE_RE), ("face_shape", _FACE_RE)):
        if m := pattern.search(t):
            out[name] = m.group(1)
    if m := _MOUTH_RE.search(t):
        word = m.group(1)
        out["mouth"] = next(v for k, v in (("smil", "smiling"), ("frown", "frowning"), ("open", "open"), ("neutral", "neutral"), ("straight", "neutral")) if word.startswith(k))  # fmt: skip
    return out


def attributes_match(attributes: dict, parsed: dict) -> dict[str, bool]:
    """For each attribute in ``parsed`` (e.g. from ``parse_caption``), whether ``attributes`` agrees with it.

    ``ANY`` matches every value except ``"none"``.
    """
    return {
        name: (attributes[name] != "none") if value == ANY else (attributes[name] == value)
        for name, value in parsed.items()
    }
