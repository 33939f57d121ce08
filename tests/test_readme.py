"""The README's promises: its plugin example works as written, and its commands match CI."""

import json
import re
from pathlib import Path

from conftest import TINY, run_subprocess

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def block(language: str, first_line: str) -> str:
    for body in re.findall(rf"```{language}\n(.*?)```", README, flags=re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"README has no ```{language} block starting with {first_line!r}")


def test_the_readme_quantizer_plugin_installs_and_runs(tmp_path):
    (tmp_path / "my_quantizer.py").write_text(block("python", "# my_quantizer.py"))
    entry_points = block("toml", "# in your package's pyproject.toml").split("\n", 1)[1]
    dist = tmp_path / "my_quantizer-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-quantizer\nVersion: 0.1\n")
    # entry_points.txt is what pip writes from that TOML table: INI, without the quotes
    (dist / "entry_points.txt").write_text(entry_points.replace("project.entry-points.", "").replace('"', ""))
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_subprocess("list", env=env)
    assert listed.returncode == 0 and "per-tensor" in listed.stdout, listed.stderr
    # the README's command, in a clone whose default results folder holds the main job's cells (linear quantizer)
    command = re.search(r"`arqbench (run --quantizer per-tensor [^`]*)`", README).group(1).split()
    out = command[command.index("--out") + 1]
    clone = tmp_path / "clone"
    clone.mkdir()
    shorter = ["--methods", "uniform", "--budget", "0.05", *TINY]  # after the README's flags: these win
    assert run_subprocess("run", *shorter, cwd=clone).returncode == 0
    result = run_subprocess(*command, *shorter, env=env, cwd=clone)
    assert result.returncode == 0, result.stderr
    record = json.loads((clone / out / "digits/sigma0.25/budget0.05/uniform-seed0.json").read_text())
    assert record["status"] == "ok" and record["config"]["protocol"]["quantizer"] == "per-tensor"


def test_ci_runs_the_readme_test_command():
    command = block("bash", ". .venv/bin/activate && python -m pytest").strip().split("&& ")[-1]
    assert command in (ROOT / ".ci" / "run").read_text()
