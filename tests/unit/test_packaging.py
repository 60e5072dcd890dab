"""The package as pip sees it: pyproject.toml's dependencies and extras are the requirements files' pins, the
``inspectkit`` command knows every job, and the top-level scripts are doors into the package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from inspectkit.cli.main import COMMANDS, main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins(path: Path) -> set[str]:
    """The ``name==version`` lines of a requirements file, without the files it includes."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.add(line.lower())
    return out


@pytest.mark.parametrize("requirements, extra", [("requirements.txt", None), ("requirements-train.txt", "train"),
                                                 ("requirements-dev.txt", "dev")])
def test_pyproject_pins_what_the_requirements_files_pin(requirements, extra):
    declared = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    declared = {d.lower() for d in declared if not d.startswith("inspectkit")}
    assert declared == pins(REPO / requirements)


@pytest.mark.parametrize("name", ["app", "train", "adapt", "evaluate", "batch", "export-onnx", "fit-guard",
                                  "set-threshold", "calibrate-heatmap"])
def test_the_command_has_a_subcommand_for_every_job(name, capsys):
    assert name in COMMANDS
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_an_unknown_subcommand_is_named_with_the_known_ones(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err


def test_the_console_script_points_at_the_dispatcher():
    assert PROJECT["scripts"] == {"inspectkit": "inspectkit.cli.main:main"}


@pytest.mark.parametrize("script", ["train.py", "adapt.py", "evaluate.py", "batch_inspect.py", "export_onnx.py",
                                    "fit_guard.py", "set_threshold.py", "calibrate_heatmap.py", "compare_models.py",
                                    "audit.py", "localize.py", "deploy_space.py"])
def test_a_top_level_script_is_a_door_that_still_runs(script):
    text = (REPO / script).read_text()
    assert len(text.splitlines()) <= 12 and re.search(r"^from inspectkit\.[\w.]+ import main$", text, re.M)
    out = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout


@pytest.mark.parametrize("through_inspectkit", [True, False])
def test_an_error_names_the_command_as_it_was_typed(tmp_path, monkeypatch, capsys, through_inspectkit):
    from inspectkit.cli import set_threshold

    missing = tmp_path / "missing.pt"
    monkeypatch.setattr(sys, "argv", ["set_threshold.py"])  # as the door script runs
    if through_inspectkit:
        assert main(["set-threshold", "--checkpoint", str(missing)]) == 2
    else:
        assert set_threshold.main(["--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err
    said = "inspectkit set-threshold: error: " if through_inspectkit else "set_threshold.py: error: "
    assert err.startswith(said) and str(missing) in err
