"""The README's first two commands are the user's set-up; CI must run the very test command the README shows."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_readme_opens_with_the_two_setup_commands():
    first, second = _readme_commands()[:2]
    assert first.endswith("python -m harness run")
    assert "pytest" in second and "HF_HUB_OFFLINE=1" in second
    for command in (first, second):
        assert "pip install torch==2.13.0" in command  # the pinned torch comes first (never an unpinned CUDA pull)


def test_ci_runs_the_readme_test_command():
    second = _readme_commands()[1]
    after_activation = second.split("&& ", 2)[2]  # drop `python -m venv .venv && . .venv/bin/activate`
    assert after_activation in (ROOT / ".ci" / "run").read_text()
