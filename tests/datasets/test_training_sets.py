"""The training-set adapters (Virtual KITTI 2, HyperSim) on fixtures written from the tiny world."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from datasets.base import Dataset
from datasets.decode import DecodeError
from datasets.hypersim import HyperSim
from datasets.normals_formats import hypersim_distance_to_depth, hypersim_focal_px, hypersim_tonemap
from datasets.training import TrainingSet
from datasets.vkitti import VirtualKITTI2
from harness.metrics import angular_error_deg
from normals_fixtures import make_tar
from training_fixtures import hypersim_paths, vkitti_paths, write_hypersim, write_vkitti

pytestmark = pytest.mark.filterwarnings("ignore::datasets.lists.ListMismatchWarning")  # fixture lists
KB_ROWS, KB_COLS = slice(23, 375), slice(13, 1229)  # 375 x 1242: top = 375 - 352, left = int((1242 - 1216) / 2)


# -- Virtual KITTI 2 ---------------------------------------------------------------------------------------------

def test_vkitti_metres_sky_range_and_kb_crop(tmp_path):
    truth = write_vkitti(tmp_path, 2)
    ds = VirtualKITTI2(root=str(tmp_path))
    assert len(ds) == 2 and ds.evaluation is False
    for s in ds:
        depth, sky = (a[KB_ROWS, KB_COLS] for a in truth[s.id])
        assert s.rgb.shape == (352, 1216, 3) and s.rgb.dtype == np.uint8
        assert s.depth.dtype == np.float32 and s.depth.shape == (352, 1216)
        expected_valid = ~sky & (depth > 1e-5) & (depth < 80)
        assert np.array_equal(s.valid, expected_valid) and sky.any() and (~sky & (depth >= 80)).any()
        assert np.array_equal(s.depth[s.valid], depth[s.valid])  # centimetres / 100, exactly
        full = cv2.imread(str(tmp_path / s.id))[:, :, ::-1]
        assert np.array_equal(s.rgb, full[KB_ROWS, KB_COLS])


def test_vkitti_without_crop_and_with_a_separate_depth_tar(tmp_path):
    rgb_dir, depth_dir = tmp_path / "rgb", tmp_path / "depth"
    rgb_dir.mkdir(), depth_dir.mkdir()
    write_vkitti(rgb_dir, 2, depth_folder=depth_dir)
    tar = make_tar(depth_dir, tmp_path / "vkitti_2.0.3_depth.tar")
    ds = VirtualKITTI2(root=str(rgb_dir), depth_root=str(tar), kb_crop=False)
    s = ds.load(ds.ids()[0])
    assert s.rgb.shape == (375, 1242, 3) and ds.describe()["kb_crop"] is False


def test_vkitti_folder_and_tar_identical_and_list_handling(tmp_path):
    folder = tmp_path / "vkitti2"
    folder.mkdir()
    write_vkitti(folder, 3)
    tar = make_tar(folder, tmp_path / "vkitti2.tar", arcname="vkitti2")
    a, b = VirtualKITTI2(root=str(folder)), VirtualKITTI2(root=str(tar))
    assert [i.split("/", 1)[1] if i.startswith("vkitti2/") else i for i in b.ids()] == a.ids()
    for x, y in zip(a, b):
        assert np.array_equal(x.depth, y.depth) and np.array_equal(x.rgb, y.rgb)
    listing = tmp_path / "list.txt"
    first, second = vkitti_paths(0), vkitti_paths(1)
    listing.write_text(f"{first[0]} {first[1]}\n{second[0]} None\n")
    assert VirtualKITTI2(root=str(folder), list_path=str(listing)).ids() == [first[0]]


def test_vkitti_bad_depth_files(tmp_path):
    write_vkitti(tmp_path, 2)
    rgb0, depth0 = vkitti_paths(0)
    (tmp_path / depth0).write_bytes(cv2.imencode(".png", np.zeros((375, 1242), np.uint8))[1].tobytes())
    ds = VirtualKITTI2(root=str(tmp_path))
    with pytest.raises(DecodeError, match="depth_00000.png.*16-bit"):
        ds.load(rgb0)
    (tmp_path / depth0).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DecodeError, match="depth_00000.png"):
        ds.load(rgb0)
    (tmp_path / vkitti_paths(1)[1]).unlink()
    with pytest.raises(FileNotFoundError, match="depth_00001.png"):
        VirtualKITTI2(root=str(tmp_path))


# -- HyperSim ----------------------------------------------------------------------------------------------------

def test_hypersim_default_focal_and_distance_to_depth():
    assert hypersim_focal_px(1024) == 886.81 and hypersim_focal_px(512) == pytest.approx(443.405)
    depth = hypersim_distance_to_depth(np.full((768, 1024), 2.0, np.float32), 886.81)
    corner = 2.0 * 886.81 / np.sqrt(511.5 ** 2 + 383.5 ** 2 + 886.81 ** 2)  # pixel (0, 0): centre offsets 511.5, 383.5
    assert depth[0, 0] == pytest.approx(corner, rel=1e-6)
    assert depth[384, 512] == pytest.approx(2.0 * 886.81 / np.sqrt(0.25 + 0.25 + 886.81 ** 2), rel=1e-6)


def test_hypersim_depth_normals_valid_and_rgb(tmp_path):
    truth = write_hypersim(tmp_path, 2)
    for sample_id, (tiny, focal) in truth.items():
        ds = HyperSim(root=str(tmp_path), focal_px=focal)
        s = ds.load(sample_id)
        assert s.depth.dtype == np.float32 and s.rgb.dtype == np.uint8 and s.normals.dtype == np.float32
        assert np.array_equal(s.valid, tiny.valid)
        np.testing.assert_allclose(s.depth[s.valid], tiny.depth[s.valid], rtol=1e-5)
        errors = angular_error_deg(s.normals, tiny.normals, tiny.valid)  # half were stored facing away
        assert errors.max() < 1e-3
    assert len(ds) == 2 and ds.evaluation is False


def test_hypersim_wrong_normal_convention_is_caught(tmp_path):
    truth = write_hypersim(tmp_path, 2, z_forward=True)
    errors = [angular_error_deg(HyperSim(root=str(tmp_path), focal_px=f).load(i).normals, t.normals, t.valid)
              for i, (t, f) in truth.items()]
    assert np.concatenate(errors).mean() > 25.0


def test_hypersim_float16_files_and_tar(tmp_path):
    folder = tmp_path / "hs"
    truth = write_hypersim(folder, 1, dtype=np.float16)
    (sample_id, (tiny, focal)), = truth.items()
    s = HyperSim(root=str(folder), focal_px=focal).load(sample_id)
    np.testing.assert_allclose(s.depth[s.valid], tiny.depth[s.valid], rtol=1e-3)
    t = HyperSim(root=str(make_tar(folder, tmp_path / "hs.tar")), focal_px=focal).load(sample_id)
    assert np.array_equal(s.depth, t.depth) and np.array_equal(s.rgb, t.rgb) and np.array_equal(s.normals, t.normals)


def test_hypersim_split_csv_and_errors(tmp_path):
    write_hypersim(tmp_path, 2)
    csv = tmp_path / "metadata_images_split_scene_v1.csv"
    csv.write_text("scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,split_partition_name\n"
                   "ai_001_001,cam_00,0,True,,train\nai_001_002,cam_00,1,True,,val\n"
                   "ai_001_002,cam_00,1,False,x,train\n")
    ds = HyperSim(root=str(tmp_path), list_path=str(csv), split="train")
    assert ds.ids() == [hypersim_paths("ai_001_001", "cam_00", 0)["color"]]
    broken = tmp_path / hypersim_paths("ai_001_002", "cam_00", 1)["depth_meters"]
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(ValueError, match="frame.0001.depth_meters.hdf5.*truncated"):
        HyperSim(root=str(tmp_path)).load(hypersim_paths("ai_001_002", "cam_00", 1)["color"])
    broken.unlink()
    with pytest.raises(FileNotFoundError, match="frame.0001.depth_meters.hdf5"):
        HyperSim(root=str(tmp_path))


def test_hypersim_tone_map_reads_its_pixels_from_render_entity_id(tmp_path):
    import h5py
    truth = write_hypersim(tmp_path, 1)
    (sample_id, (tiny, focal)), = truth.items()
    paths = hypersim_paths("ai_001_001", "cam_00", 0)
    with h5py.File(tmp_path / paths["color"], "r") as f:
        hdr = f["dataset"][()]
    entity = np.full(tiny.valid.shape, -1, np.int32)
    entity[:4] = 3  # HyperSim's mask: here only the top rows count, unlike every pixel of finite distance
    with h5py.File(tmp_path / paths["render_entity_id"], "w") as f:
        f.create_dataset("dataset", data=entity)
    by_entity = HyperSim(root=str(tmp_path), focal_px=focal).load(sample_id).rgb
    by_depth = HyperSim(root=str(tmp_path), focal_px=focal, tonemap_mask="finite_depth").load(sample_id).rgb
    assert np.array_equal(by_entity, hypersim_tonemap(hdr, entity != -1))
    assert np.array_equal(by_depth, hypersim_tonemap(hdr, tiny.valid)) and not np.array_equal(by_entity, by_depth)
    (tmp_path / paths["render_entity_id"]).unlink()
    with pytest.raises(FileNotFoundError, match="render_entity_id.hdf5(.|\n)*tonemap_mask='finite_depth'"):
        HyperSim(root=str(tmp_path))
    assert HyperSim(root=str(tmp_path), tonemap_mask="finite_depth").describe()["tonemap_mask"] == "finite_depth"
    with pytest.raises(ValueError, match="unknown tonemap_mask 'entity'"):
        HyperSim(root=str(tmp_path), tonemap_mask="entity")


def test_tonemap_maps_the_90th_percentile_to_0_8():
    grey = np.linspace(0.01, 2.0, 100, dtype=np.float32)
    hdr = np.repeat(grey[None, :, None], 3, axis=2)  # brightness = grey (weights sum to 1)
    out = hypersim_tonemap(hdr, np.ones((1, 100), bool))
    p90 = np.percentile(grey, 90)
    i = np.argmin(np.abs(grey - p90))
    expected = np.clip((grey.astype(float) * 0.8 ** 2.2 / p90) ** (1 / 2.2), 0, 1) * 255
    assert int(out[0, i, 0]) == int(0.8 * 255 * (grey[i] / p90) ** (1 / 2.2))  # truncated, as Marigold's uint8 cast
    np.testing.assert_array_equal(out[0, :, 1], expected.astype(np.uint8))


def test_tonemap_edge_cases_follow_hypersims_code():
    hdr = np.zeros((1, 20, 3), np.float32)
    hdr[0, 0] = 5.0  # one bright pixel in 20: the 90th percentile is 0, below 1e-4 -> scale 0, a black frame
    assert not hypersim_tonemap(hdr, np.ones((1, 20), bool)).any()
    # no valid pixel: scale 1 (values above 1 clip to 255, 0.25 ** (1/2.2) * 255 = 135.8 truncates to 135)
    hdr[0, 1] = 0.25
    hdr[0, 2] = np.nan
    out = hypersim_tonemap(hdr, np.zeros((1, 20), bool))
    assert out[0, 0].tolist() == [255] * 3 and out[0, 1].tolist() == [135] * 3 and out[0, 2].tolist() == [0] * 3


# -- both --------------------------------------------------------------------------------------------------------

class _Ids(TrainingSet, Dataset):
    name = "ids"

    def ids(self):
        return [f"s{i}" for i in range(20)]

    def load(self, sample_id):
        return sample_id


def test_training_order_is_seeded_and_reshuffled_per_epoch():
    ds = _Ids()
    first, again, other = ds.epoch_order(1, 0), ds.epoch_order(1, 0), ds.epoch_order(2, 0)
    assert first == again and sorted(first) == sorted(ds.ids()) and first != other
    stream = list(ds.training_samples(seed=1, epochs=2))
    assert stream[:20] == first and stream[20:] == ds.epoch_order(1, 1) != first


def test_training_sets_are_left_out_of_all():
    from datasets.nyuv2_normals import NYUv2Normals
    from harness.cli import _dataset_names

    assert NYUv2Normals.evaluation  # registered on import; an evaluation benchmark
    names = _dataset_names("all")
    assert "vkitti" not in names and "hypersim" not in names and "nyuv2_normals" in names
