"""The face annotation readers, under their MTCNN-era module name.

They live in the shared core, :mod:`caffe_common.face_annotations` (the face SSD reads the same files and
may not import this package); this module re-exports them so that existing imports keep working.
"""
from __future__ import annotations

from caffe_common.face_annotations import (
    FIVE_POINT_MIRROR,
    FIVE_POINT_NAMES,
    WIDER_ATTRIBUTES,
    AnnotationError,
    ImglabImage,
    LandmarkFace,
    Parsed,
    ProblemLog,
    WiderImage,
    float_array,
    format_wider_gt,
    inter_ocular_distance,
    landmarks_68_to_5,
    parse_numbers,
    read_celeba,
    read_counted_blocks,
    read_imglab_xml,
    read_landmark_list,
    read_text_lines,
    read_wider_gt,
    read_xml_root,
    split_wider_annotations,
    wider_event_matches,
    write_wider_gt,
)

__all__ = [
    "FIVE_POINT_MIRROR", "FIVE_POINT_NAMES", "WIDER_ATTRIBUTES", "AnnotationError", "ImglabImage", "LandmarkFace",
    "Parsed", "ProblemLog", "WiderImage", "float_array", "format_wider_gt", "inter_ocular_distance",
    "landmarks_68_to_5", "parse_numbers", "read_celeba", "read_counted_blocks", "read_imglab_xml",
    "read_landmark_list", "read_text_lines", "read_wider_gt", "read_xml_root", "split_wider_annotations",
    "wider_event_matches", "write_wider_gt",
]
