"""ScanNet surface normals (300 test images) from DSINE's evaluation set: ``scene*/<id>_normal.png``."""
from datasets.dsine_normals import DsineNormals
from datasets.registry import register


@register("scannet_normals")
class ScanNetNormals(DsineNormals):
    """ScanNet normals, 300 test images (DSINE set: uint8 PNG, x-left flipped to x-right; native 480x640)."""

    dsine_folder = "scannet"
    images_under = ""
    sample_folder = r"scene\d{4}_\d{2}"
    normal_ext = ".png"
