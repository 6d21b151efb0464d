"""What a run folder records about the machine: the CPU kind matters, since its vector kernels set the rounding."""
import torch

from harness import manifest as mf


def test_cpu_model_reads_the_first_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Example CPU 9000 @ 2.0GHz\n\n"
                    "processor\t: 1\nmodel name\t: Example CPU 9000 @ 2.0GHz\n")
    assert mf.cpu_model(str(info)) == "Example CPU 9000 @ 2.0GHz"


def test_cpu_model_without_cpuinfo_falls_back_to_platform(tmp_path):
    name = mf.cpu_model(str(tmp_path / "absent"))
    assert isinstance(name, str) and name  # platform.processor() or the architecture, never empty


def test_cpu_description_names_model_kernels_and_threads():
    text = mf.device_description("cpu")
    assert mf.cpu_model() in text
    assert f"{torch.backends.cpu.get_cpu_capability()} kernels" in text
    assert f"({torch.get_num_threads()} torch threads)" in text
