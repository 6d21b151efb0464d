"""MPI Sintel surface normals (1064 frames of 23 scenes) from DSINE's evaluation set: ``<scene>/frame_*_normal.exr``."""
from datasets.dsine_normals import DsineNormals
from datasets.registry import register


@register("sintel_normals")
class SintelNormals(DsineNormals):
    """MPI Sintel normals, 1064 frames (DSINE set: float EXR, valid |n| > 0.5, x-left flipped; 436x1024)."""

    dsine_folder = "sintel"
    images_under = ""
    sample_folder = r"[a-z]+_\d+"
    normal_ext = ".exr"
