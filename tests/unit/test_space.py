"""Space packaging: the Space card parses and pins the tested Gradio; deploy_space.py uploads only its allow-list
and fails clearly without a token or a network."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def front_matter_text() -> str:
    """The front matter the Space gets: README.md's when it has one, else space/README_front_matter.yml."""
    readme = REPO / "README.md"
    if readme.is_file() and readme.read_text(encoding="utf-8").startswith("---"):
        return readme.read_text(encoding="utf-8")
    return (REPO / "space" / "README_front_matter.yml").read_text(encoding="utf-8") + "\n# Casting inspection\n"


def pinned(package: str) -> str:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.fullmatch(rf"\s*{re.escape(package)}\s*==\s*([\w.]+)\s*(#.*)?", line, flags=re.IGNORECASE)
        if m:
            return m.group(1)
    raise AssertionError(f"{package} is not pinned with == in requirements.txt")


def test_space_card_parses_and_pins_the_tested_gradio():
    from huggingface_hub import SpaceCard

    card = SpaceCard(front_matter_text())
    d = card.data
    assert d.sdk == "gradio" and d.app_file == "app.py"
    assert d.sdk_version == pinned("gradio")
    assert d.title and d.license and d.emoji
    assert d.colorFrom in COLORS and d.colorTo in COLORS
    assert 0 < len(d.short_description) <= 60  # the Hub's limit
    assert isinstance(d.tags, list) and d.tags


def test_pinned_gradio_is_the_installed_one():
    import gradio

    assert gradio.__version__ == pinned("gradio")


def _tree(tmp_path: Path, readme: str | None = "# Casting inspection\n") -> Path:
    """A copy of what the Space needs plus junk that must never be uploaded."""
    root = tmp_path / "repo"
    (root / "space").mkdir(parents=True)
    for f in ("app.py", "requirements.txt"):
        shutil.copy(REPO / f, root / f)
    (root / "inference_handler.py").write_text("# handler\n")
    (root / "gradcam.py").write_text("# gradcam\n")
    shutil.copy(REPO / "space" / "README_front_matter.yml", root / "space" / "README_front_matter.yml")
    if readme is not None:
        (root / "README.md").write_text(readme)
    (root / "final_best_model.pt").write_bytes(b"weights")
    (root / "final_best_model.pt.sha256").write_text("0" * 64 + "  final_best_model.pt\n")
    (root / "final_best_model.onnx").write_bytes(b"graph")
    (root / "final_best_model.onnx.sha256").write_text("0" * 64 + "  final_best_model.onnx\n")
    (root / "inspectkit" / "__pycache__").mkdir(parents=True)
    (root / "inspectkit" / "__init__.py").write_text("")
    (root / "inspectkit" / "service.py").write_text("# service\n")
    (root / "inspectkit" / "__pycache__" / "service.cpython-311.pyc").write_bytes(b"\0")
    (root / "examples").mkdir()
    shutil.copy(next((REPO / "examples").glob("*.jpeg")), root / "examples" / "a.jpeg")
    (root / "examples" / "ATTRIBUTION.md").write_text("CC BY-NC-ND 4.0\n")
    (root / "reports").mkdir()
    (root / "reports" / "evaluation.json").write_text("{}")
    (root / "reports" / "test_predictions.csv").write_text("x")  # not a listed report type
    for junk in ("data/casting/train/x.jpg", ".venv/bin/python", "tests/test_x.py", "runs/run1.log",
                 ".env", "shared/weights/w.pth", "examples/.DS_Store", "notes.txt",
                 "reports/.ipynb_checkpoints/evaluation-checkpoint.json", "examples/.cache/b.jpeg",
                 "inspectkit/__pycache__/x.py"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    return root


def _run(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    e.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "deploy_space.py"), "--root", str(root), *args], cwd=root,
                          capture_output=True, text=True, env=e, timeout=120)


def test_dry_run_lists_only_the_allow_list(tmp_path):
    root = _tree(tmp_path)
    out = _run(root, "--dry-run")
    assert out.returncode == 0, out.stderr
    listed = [line.split()[1] for line in out.stdout.splitlines() if re.match(r"\s*[\d,]+  \S", line)]
    assert sorted(listed) == sorted([
        "app.py", "inference_handler.py", "gradcam.py", "requirements.txt", "README.md", "final_best_model.pt",
        "final_best_model.pt.sha256", "final_best_model.onnx", "final_best_model.onnx.sha256",
        "inspectkit/__init__.py", "inspectkit/service.py", "examples/a.jpeg",
        "examples/ATTRIBUTION.md", "reports/evaluation.json"])
    assert "front matter added" in out.stdout and "nothing uploaded" in out.stdout


def test_readme_gets_the_front_matter_only_when_it_has_none(tmp_path):
    from huggingface_hub import SpaceCard

    from inspectkit.cli import deploy_space

    root = _tree(tmp_path)
    text = deploy_space.readme_for_space(root).decode()
    assert SpaceCard(text).data.sdk == "gradio" and text.rstrip().endswith("# Casting inspection")
    (root / "README.md").write_text(front_matter_text())
    assert deploy_space.readme_for_space(root).decode() == front_matter_text()


def test_model_repo_leaves_the_weights_out(tmp_path):
    root = _tree(tmp_path)
    (root / "final_best_model.pt").unlink()
    assert _run(root, "--dry-run").returncode == 2
    out = _run(root, "--dry-run", "--model-repo", "acme/casting-model")
    assert out.returncode == 0 and "final_best_model.pt" not in out.stdout and "final_best_model.onnx" not in out.stdout


def test_the_space_needs_the_graph(tmp_path):
    """The Space installs no torch: deploying the checkpoint without its ONNX graph is refused with the command."""
    root = _tree(tmp_path)
    (root / "final_best_model.onnx").unlink()
    out = _run(root, "--dry-run")
    assert out.returncode == 2 and "final_best_model.onnx" in out.stderr and "export_onnx.py" in out.stderr


def test_no_token_is_a_clear_error(tmp_path):
    out = _run(_tree(tmp_path), "--repo-id", "acme/casting-inspection")
    assert out.returncode == 2 and "HF_TOKEN" in out.stderr and "Traceback" not in out.stderr


def test_offline_is_a_clear_error(tmp_path):
    out = _run(_tree(tmp_path), "--repo-id", "acme/casting-inspection",
               env={"HF_TOKEN": "hf_" + "x" * 10, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "cannot reach the Hugging Face Hub" in out.stderr and "Traceback" not in out.stderr


def test_a_token_inside_a_file_is_refused(tmp_path):
    root = _tree(tmp_path)
    (root / "inspectkit" / "config.py").write_text('TOKEN = "hf_' + "a" * 34 + '"\n')
    out = _run(root, "--dry-run")
    assert out.returncode == 2 and "looks like a Hugging Face token" in out.stderr


def test_bad_repo_id_is_named(tmp_path):
    out = _run(_tree(tmp_path), "--repo-id", "not a repo")
    assert out.returncode == 2 and "'not a repo'" in out.stderr
