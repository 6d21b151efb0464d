import numpy as np
import pytest

from datasets.synthetic import render
from harness.pool import render_arrays


def test_worker_processes_render_the_same_pool_as_one_process():
    serial = render_arrays("train", 7, 3, 16, workers=1, chunk=3)
    parallel = render_arrays("train", 7, 3, 16, workers=2, chunk=3)  # chunks 0:3, 3:6, 6:7 over two workers
    assert serial.keys() == parallel.keys() == {"rgb", "depth", "normals", "valid", "outdoor"}
    for key in serial:
        assert serial[key].dtype == parallel[key].dtype and np.array_equal(serial[key], parallel[key]), key
    scene = render("train", 5, seed=3, height=16, width=16)
    assert np.array_equal(parallel["rgb"][5], scene.rgb) and np.array_equal(parallel["valid"][5], scene.valid)
    assert parallel["depth"].shape == (7, 16, 16) and parallel["outdoor"].shape == (7,)


def test_a_failing_render_worker_is_reported_with_its_error():
    with pytest.raises(RuntimeError, match="render worker failed.*no_such_split") as err:
        render_arrays("no_such_split", 4, 0, 16, workers=2, chunk=2)
    assert "Traceback" in str(err.value)


def test_an_empty_pool_is_refused_by_name():
    with pytest.raises(ValueError, match="at least one scene; got count=0"):
        render_arrays("val", 0, 0, 16)
