from methods.fingerprint import weights_fingerprint


def test_a_folder_fingerprint_follows_its_content_not_its_place(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "unet").mkdir(parents=True)
        (tmp_path / name / "unet" / "w.bin").write_bytes(bytes(range(256)) * 20000)  # 5 MB: first and last MiB read
        (tmp_path / name / "config.json").write_text("{}")
    first = weights_fingerprint(tmp_path / "a")
    assert len(first) == 16 and first == weights_fingerprint(tmp_path / "b")
    data = bytearray((tmp_path / "b" / "unet" / "w.bin").read_bytes())
    data[-10] ^= 1  # a change near the end of a large file
    (tmp_path / "b" / "unet" / "w.bin").write_bytes(bytes(data))
    assert weights_fingerprint(tmp_path / "b") != first
    (tmp_path / "a" / "config.json").write_text('{"x": 1}')
    assert weights_fingerprint(tmp_path / "a") not in (first, weights_fingerprint(tmp_path / "b"))


def test_a_single_file_and_an_absent_path(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"abc")
    assert len(weights_fingerprint(tmp_path / "m.safetensors")) == 16
    assert weights_fingerprint(tmp_path / "missing") == ""
