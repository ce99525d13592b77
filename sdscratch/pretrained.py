"""Where the models shipped inside the package live, and a one-liner to find them offline.

Example:
    ```py
    >>> import sdscratch
    >>> from sdscratch import CartoonFacePipeline
    >>> pipe = CartoonFacePipeline.from_pretrained(sdscratch.pretrained("cartoon-faces"))
    ```
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

#: Names of the models this package knows about, and what each is.
PRETRAINED_MODELS: dict[str, str] = {
    "cartoon-faces": "64x64 text-to-image cartoon faces (SmallVAE + SmallUNet + CLIP text encoder trained from scratch)",
    "digits": "16x16 text-to-image handwritten digits trained on scikit-learn's real digits",
}


def pretrained(name: str = "cartoon-faces") -> str:
    """Returns the local folder of a model shipped with sdscratch (no network needed).

    Args:
        name (`str`, defaults to `"cartoon-faces"`): One of `sdscratch.PRETRAINED_MODELS`.

    Returns:
        `str`: A pipeline folder (``model_index.json`` + one subfolder per component) that
        `CartoonFacePipeline.from_pretrained` loads.

    Raises:
        `ValueError`: If `name` is not a known model.
        `FileNotFoundError`: If the model is known but its weights are not in this installation.
    """
    if not isinstance(name, str) or name not in PRETRAINED_MODELS:
        raise ValueError(f"`name` must be one of {sorted(PRETRAINED_MODELS)}, got {name!r}.")
    path = PRETRAINED_DIR / name
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"The shipped model {name!r} is not present in this installation (expected {path}/model_index.json). "
            "Train one with the recipe in training/ or pass a pipeline folder of your own."
        )
    return str(path)


def is_available(name: str) -> bool:
    """Whether the shipped model `name` is present in this installation (`False` for any other value)."""
    return (
        isinstance(name, str) and name in PRETRAINED_MODELS and (PRETRAINED_DIR / name / "model_index.json").is_file()
    )
