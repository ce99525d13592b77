"""Data: procedural cartoon faces, real digits, and one loader for every image-caption source."""

from .captions import (
    ALL_CAPTIONS,
    ANY,
    ATTRIBUTES,
    CAPTION_ATTRIBUTES,
    attribute_caption,
    attribute_probe,
    attributes_match,
    make_caption,
    parse_caption,
    with_attribute_value,
)
from .cartoon_faces import (
    CartoonFacesTorchDataset,
    cartoon_faces_dataset,
    face_captions,
    generate_cartoon_face,
    generate_face,
    render_face,
    sample_attributes,
    write_imagefolder,
)
from .digits import load_digits_dataset
from .loading import build_image_transform, collate_image_caption, load_image_caption_dataset, with_image_transform

__all__ = [
    "ALL_CAPTIONS",
    "ANY",
    "ATTRIBUTES",
    "CAPTION_ATTRIBUTES",
    "CartoonFacesTorchDataset",
    "attribute_caption",
    "attribute_probe",
    "attributes_match",
    "build_image_transform",
    "collate_image_caption",
    "cartoon_faces_dataset",
    "face_captions",
    "generate_cartoon_face",
    "generate_face",
    "load_digits_dataset",
    "load_image_caption_dataset",
    "make_caption",
    "parse_caption",
    "render_face",
    "sample_attributes",
    "with_image_transform",
    "with_attribute_value",
    "write_imagefolder",
]
