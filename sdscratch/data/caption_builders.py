"""Caption builders for real data sets without captions: CelebA's 40 binary attributes and class labels
(digits, the 102 Oxford flowers, any ``ClassLabel`` with names) become sentences."""

from collections.abc import Callable
from typing import Optional

from .digits import digit_caption

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
# Attributes named after "with ...", in this order. (Male, Young, Smiling, Chubby, Blurry, hair and No_Beard
# are worded separately; Attractive is not worded.)
_CELEBA_PHRASES = {
    "Eyeglasses": "eyeglasses", "Wearing_Hat": "a hat", "Bangs": "bangs", "Receding_Hairline": "a receding hairline",
    "Mustache": "a mustache", "Goatee": "a goatee", "Sideburns": "sideburns", "5_o_Clock_Shadow": "stubble",
    "Heavy_Makeup": "heavy makeup", "Wearing_Lipstick": "lipstick", "Wearing_Earrings": "earrings",
    "Wearing_Necklace": "a necklace", "Wearing_Necktie": "a necktie", "Mouth_Slightly_Open": "a slightly open mouth",
    "Arched_Eyebrows": "arched eyebrows", "Bushy_Eyebrows": "bushy eyebrows", "Narrow_Eyes": "narrow eyes",
    "Bags_Under_Eyes": "bags under the eyes", "Big_Nose": "a big nose", "Pointy_Nose": "a pointy nose",
    "Big_Lips": "big lips", "High_Cheekbones": "high cheekbones", "Rosy_Cheeks": "rosy cheeks",
    "Double_Chin": "a double chin", "Oval_Face": "an oval face", "Pale_Skin": "pale skin",
}  # fmt: skip
_CELEBA_HAIR = {"Black_Hair": "black", "Blond_Hair": "blond", "Brown_Hair": "brown", "Gray_Hair": "gray"}

# The 102 Oxford flower categories, category k (1-based, as the ``nelorth/oxford-flowers`` label names) at k - 1.
OXFORD_FLOWERS = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold", "tiger lily",
    "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot", "king protea",
    "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily", "balloon flower",
    "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger", "grape hyacinth",
    "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william", "carnation",
    "garden phlox", "love in the mist", "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower",
    "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
    "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium", "orange dahlia",
    "pink-yellow dahlia", "cautleya spicata", "japanese anemone", "black-eyed susan", "silverbush",
    "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower", "tree poppy", "gazania",
    "azalea", "water lily", "rose", "thorn apple", "morning glory", "passion flower", "lotus", "toad lily",
    "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia",
    "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper", "blackberry lily",
)  # fmt: skip


def _is_true(value) -> bool:
    """CelebA flags come as -1/1, 0/1, bools or their strings."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value) and value > 0


def celeba_caption(attributes: dict) -> str:
    """CelebA attribute flags -> ``"a photo of a smiling young woman with wavy blond hair, bangs and eyeglasses"``."""
    on = {name for name, value in attributes.items() if _is_true(value)}
    words = ["a blurry photo of a" if "Blurry" in on else "a photo of a"]
    words += [adjective for name, adjective in (("Smiling", "smiling"), ("Chubby", "chubby"), ("Young", "young")) if name in on]  # fmt: skip
    words.append("man" if "Male" in on else "woman")
    details = []
    colors = [color for name, color in _CELEBA_HAIR.items() if name in on]
    texture = [t for name, t in (("Wavy_Hair", "wavy"), ("Straight_Hair", "straight")) if name in on]
    if "Bald" in on:
        details.append("a bald head")
    elif colors or texture:
        details.append(" ".join(texture[:1] + [" and ".join(colors)] if colors else texture[:1]) + " hair")
    if "No_Beard" in attributes and "No_Beard" not in on:
        details.append("a beard")
    details += [phrase for name, phrase in _CELEBA_PHRASES.items() if name in on]
    if details:
        words.append("with " + (details[0] if len(details) == 1 else ", ".join(details[:-1]) + " and " + details[-1]))
    return " ".join(words)


def find_celeba_attributes(features) -> Optional[Callable[[dict], dict]]:
    """If the features hold CelebA attributes (as columns or an ``attributes`` struct), a function
    ``row -> {attribute: value}``; else ``None``."""
    columns = [name for name in CELEBA_ATTRIBUTES if name in features]
    if len(columns) >= 20:
        return lambda row: {name: row[name] for name in columns}
    for name, feature in features.items():
        if isinstance(feature, dict) and sum(a in feature for a in CELEBA_ATTRIBUTES) >= 20:
            return lambda row, name=name: {k: v for k, v in row[name].items() if k in CELEBA_ATTRIBUTES}
    return None


def label_caption_builder(column: str, feature) -> Callable[[dict, int], str]:
    """``(row, index) -> caption`` for a class-label column: digits (10 numeric classes) as
    ``sdscratch.data.digits`` captions ("mixed" style by row), the 102 Oxford flower categories by name, other
    named classes as ``"a photo of a {name}"``."""
    names = list(getattr(feature, "names", None) or [])
    builder = _label_caption_builder(column, names)

    def caption(row, index):
        if row[column] is None:  # e.g. an imagefolder whose class folders `datasets` could not label
            raise ValueError(
                f"class-label column {column!r} holds no label (None) in row {index}, so that image has no caption; "
                "pass caption_column naming a text column (an image folder read by `datasets.load_dataset(folder)` "
                "drops a top-level metadata.jsonl when it has train/ or test/ subfolders: pass it as train_data_dir)"
            )
        return builder(row, index)

    return caption


def _label_caption_builder(column: str, names: list) -> Callable[[dict, int], str]:
    if names == [str(d) for d in range(10)]:
        return lambda row, index: digit_caption(int(row[column]), "mixed", index)
    if not names:

        def from_int(row, index):
            label = int(row[column])
            if not 0 <= label <= 9:
                raise ValueError(
                    f"column {column!r} holds integer labels without class names (row {index}: {label}); "
                    "only digits 0-9 can be captioned that way; pass caption_column"
                )
            return digit_caption(label, "mixed", index)

        return from_int
    if sorted(names) == sorted(str(k) for k in range(1, len(OXFORD_FLOWERS) + 1)):
        return lambda row, index: f"a photo of a {OXFORD_FLOWERS[int(names[row[column]]) - 1]}, a type of flower"
    return lambda row, index: f"a photo of a {names[row[column]].replace('_', ' ')}"
