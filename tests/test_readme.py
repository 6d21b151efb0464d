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


def test_the_readme_shows_the_shipped_table_3_and_claims_as_they_are():
    """The README's copies of the ablation results are the shipped files' rows (regenerating one means both)."""
    readme = (ROOT / "README.md").read_text()
    folder = ROOT / "results" / "tiny_world" / "ablation"
    table3 = [line for line in (folder / "table3.md").read_text().splitlines() if line.startswith("| ")]
    claims = [line.split(" | ") for line in (folder / "claims.md").read_text().splitlines()
              if line.startswith("| ") and line.split(" | ")[1] == "all"]
    on_all_images = [" | ".join(cells[:1] + cells[2:]) for cells in claims]  # the subset column dropped
    assert table3 and on_all_images
    assert [row for row in table3 + on_all_images if row not in readme] == []
