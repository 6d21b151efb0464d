"""NYUv2 surface normals (654 test images, GeoNet GT) from DSINE's evaluation set: ``test/<id>_normal.png``."""
from datasets.dsine_normals import DsineNormals
from datasets.registry import register


@register("nyuv2_normals")
class NYUv2Normals(DsineNormals):
    """NYUv2 normals, 654 test images (DSINE set: uint8 PNG, x-left flipped to x-right; native 480x640)."""

    dsine_folder = "nyuv2"
    images_under = "test"
    normal_ext = ".png"
