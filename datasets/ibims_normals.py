"""iBims-1 surface normals (100 images) from DSINE's evaluation set: ``ibims/<name>_normal.exr``."""
from datasets.dsine_normals import DsineNormals
from datasets.registry import register


@register("ibims_normals")
class IBimsNormals(DsineNormals):
    """iBims-1 normals, 100 images (DSINE set: float EXR, valid |n| > 0.5, x-left flipped; native 480x640)."""

    dsine_folder = "ibims"
    images_under = "ibims"
    normal_ext = ".exr"
