"""Lean serving: the committed ONNX graph beside the checkpoint, bound to it by its SHA-256, lets the
handler, the app, the JSON API, gradio_client and batch_inspect.py run in a process where torch cannot be imported;
a graph of another checkpoint is refused naming both digests; the Hub path fetches the graph with its digest."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inspectkit.inference import fast
from inspectkit.inference.checkpoint import load_checkpoint, save_checkpoint
from inspectkit.inference.handler import InferenceHandler
from inspectkit.serve.model_source import ENV_MODEL_REPO, ENV_MODEL_SHA256, default_handler_factory, resolve_checkpoint
from tests.support import REPO, synthetic_casting, write_checkpoint
from tests.trained_tiny import train_tiny

pytestmark = pytest.mark.slow

#: A sitecustomize that makes every import of torch or torchvision fail, as in a venv made from requirements.txt.
NO_TORCH = '''
import sys

class _NoTorch:
    """Meta-path finder: torch and torchvision are not installed here."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the lean-serving test)", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
'''


@pytest.fixture(scope="module")
def graphed(tmp_path_factory):
    """A trained tiny checkpoint in its own folder with its committed graph beside it."""
    src = train_tiny(tmp_path_factory.mktemp("tiny"), "mobilenet_v2", size=96)
    folder = tmp_path_factory.mktemp("model")
    ckpt = folder / "model.pt"
    shutil.copy(src, ckpt)
    shutil.copy(str(src) + ".sha256", str(ckpt) + ".sha256")
    fast.export_graph(ckpt)
    return ckpt


def _no_torch_env(tmp_path: Path, **extra) -> dict:
    site = tmp_path / "no_torch_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_TORCH)
    env = {k: v for k, v in os.environ.items() if k not in ("INSPECT_MODEL_REPO",)}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{REPO}", OMP_NUM_THREADS="1", INSPECTKIT_CACHE_DIR=str(tmp_path / "c"),
               **extra)
    return env


def _images(folder: Path, n: int = 4) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        p = folder / f"part_{i}.png"
        cv2.imwrite(str(p), synthetic_casting(rng, defect=i % 2 == 0, size=(96, 96)))
        out.append(p)
    return out


# ------------------------------------------------------------------------------------------ the committed graph


def test_the_graph_carries_what_serving_needs_and_is_bound_to_the_checkpoint(graphed, tmp_path):
    graph = fast.graph_path(graphed)
    assert graph.name == "model.onnx" and graph.is_file()
    assert Path(str(graph) + ".sha256").read_text().split()[0] == fast.sha256_file(graph)
    meta = fast.graph_metadata(graph)
    ckpt = load_checkpoint(graphed)
    assert meta["checkpoint_sha256"] == fast.sha256_file(graphed)
    from inspectkit.inference.checkpoint import weights_digest

    assert meta["weights_sha256"] == weights_digest(ckpt["state_dict"])
    for key in ("class_names", "defect_index", "threshold", "preprocessing"):
        assert meta["info"][key] == ckpt[key]
    fm = fast.load(graphed, cache_dir=tmp_path)
    assert fm.timings["source"] == "committed" and fm.onnx_path == graph
    assert not list(tmp_path.iterdir())  # nothing generated: the cache is not even touched
    lin = ckpt["state_dict"]["classifier.1.weight"].numpy()
    np.testing.assert_array_equal(fm.head_weight, lin)
    # exporting the same checkpoint again gives the same bytes (nothing to commit)
    again = fast.export_graph(graphed, tmp_path / "again.onnx")
    assert fast.sha256_file(again) == fast.sha256_file(graph)


@pytest.mark.parametrize("mode", ["defect-evidence", "class-normalised"])
def test_the_graph_gives_the_torch_backends_verdicts_and_maps(graphed, tmp_path, mode):
    rgbs = [synthetic_casting(np.random.default_rng(i), defect=i % 2 == 0, size=s)
            for i, s in enumerate([(96, 96), (70, 150), (301, 97), (96, 96)])]
    onnx = InferenceHandler(graphed, backend="onnx", cache_dir=tmp_path, threads=1, heatmap_mode=mode)
    torch_h = InferenceHandler(graphed, backend="torch", threads=1, heatmap_mode=mode)
    assert onnx.checkpoint_info["threshold"] == torch_h.checkpoint_info["threshold"]
    for a, b in zip(onnx.predict_batch(rgbs), torch_h.predict_batch(rgbs)):
        assert a.verdict == b.verdict and a.backend == "onnx" and b.backend == "torch"
        assert a.defect_probability == pytest.approx(b.defect_probability, abs=1e-5)
        assert np.abs(a.heatmap - b.heatmap).max() <= 1e-3


def test_a_graph_of_another_checkpoint_is_refused_naming_both_digests(graphed, tmp_path, caplog):
    other = write_checkpoint(tmp_path / "other.pt", seed=7)
    shutil.copy(fast.graph_path(graphed), fast.graph_path(other))  # the wrong model's graph beside it
    shutil.copy(str(fast.graph_path(graphed)) + ".sha256", str(fast.graph_path(other)) + ".sha256")
    mine, theirs = fast.sha256_file(other), fast.sha256_file(graphed)
    with pytest.raises(fast.GraphMismatch) as err:
        fast.load_graph(fast.graph_path(other), other, mine)
    assert mine in str(err.value) and theirs in str(err.value) and "export_onnx.py --checkpoint" in str(err.value)
    # with torch installed it is rebuilt (in the cache; the committed file is left for the export command)
    with caplog.at_level(logging.WARNING, logger="inspectkit.inference.fast"):
        fm = fast.load(other, cache_dir=tmp_path / "cache")
    assert fm.timings["source"] == "cache" and fm.timings["generated"] and mine in caplog.text


def test_a_damaged_graph_is_refused(graphed, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for suffix in (".pt", ".pt.sha256", ".onnx", ".onnx.sha256"):
        shutil.copy(str(graphed.with_suffix("")) + suffix, folder / f"model{suffix}")
    Path(folder / "model.onnx.sha256").write_text("0" * 64 + "  model.onnx\n")
    with pytest.raises(fast.GraphMismatch, match="0{64}"):
        fast.load_graph(folder / "model.onnx", folder / "model.pt", fast.sha256_file(folder / "model.pt"))


def test_saving_with_the_graph_rewrites_a_checkpoints_graph_and_saving_alone_does_not(graphed, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for suffix in (".pt", ".pt.sha256", ".onnx", ".onnx.sha256"):
        shutil.copy(str(graphed.with_suffix("")) + suffix, folder / f"model{suffix}")
    ckpt = load_checkpoint(folder / "model.pt")
    ckpt["threshold"] = 0.3  # as set-threshold / evaluate / calibrate-heatmap rewrite a checkpoint
    before = fast.graph_metadata(folder / "model.onnx")["checkpoint_sha256"]
    save_checkpoint(ckpt, folder / "model.pt")  # saving saves: the graph is its caller's step
    assert fast.graph_metadata(folder / "model.onnx")["checkpoint_sha256"] == before
    digest = fast.save_with_graph(ckpt, folder / "model.pt")
    meta = fast.graph_metadata(folder / "model.onnx")
    assert meta["checkpoint_sha256"] == digest and meta["info"]["threshold"] == 0.3
    # a checkpoint without a graph gets none unless asked (train() and adapt() ask)
    plain = write_checkpoint(tmp_path / "plain.pt")
    fast.save_with_graph(load_checkpoint(plain), plain)
    assert not fast.graph_path(plain).exists()
    fast.save_with_graph(load_checkpoint(plain), plain, graph=True)
    assert fast.load(plain, cache_dir=tmp_path / "c").timings["source"] == "committed"


# ------------------------------------------------------------------------------------------------- no torch


def test_handler_and_batch_run_where_torch_cannot_be_imported(graphed, tmp_path):
    other = write_checkpoint(tmp_path / "other.pt", seed=7)
    shutil.copy(fast.graph_path(graphed), fast.graph_path(other))
    imgs = _images(tmp_path / "shift")
    code = f"""
import json, sys
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch was importable")
from inspectkit.inference.handler import InferenceHandler
h = InferenceHandler({str(graphed)!r}, threads=1)
r = h.predict({str(imgs[0])!r})
out = {{"backend": h.backend, "verdict": r.verdict, "p": r.defect_probability, "map": r.heatmap.tolist(),
       "torch": "torch" in sys.modules}}
for kw in ({{"backend": "torch"}}, {{}}):
    try:
        InferenceHandler({str(other)!r} if not kw else {str(graphed)!r}, **kw)
    except Exception as exc:
        out.setdefault("errors", []).append(str(exc))
from inspectkit.ui.adapt.settings import AdaptSettings
from inspectkit.ui.adapt.tab import run_adaptation
from inspectkit.ui.adapt.view import intro_markdown
try:
    run_adaptation(None, None, None, None, [])
except ValueError as exc:
    out["adapt"] = str(exc)
out["intro"] = intro_markdown(AdaptSettings())
print(json.dumps(out))
"""
    env = _no_torch_env(tmp_path)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["backend"] == "onnx" and out["torch"] is False
    ref = InferenceHandler(graphed, backend="torch", threads=1).predict(str(imgs[0]))
    assert out["verdict"] == ref.verdict and out["p"] == pytest.approx(ref.defect_probability, abs=1e-5)
    assert np.abs(np.array(out["map"]) - ref.heatmap).max() <= 1e-3
    torch_err, mismatch = out["errors"]
    assert "requirements-train.txt" in torch_err
    assert fast.sha256_file(other) in mismatch and fast.sha256_file(graphed) in mismatch
    assert "requirements-train.txt" in out["adapt"] and "requirements-train.txt" in out["intro"]

    rows = tmp_path / "rows.csv"
    res = subprocess.run([sys.executable, str(REPO / "batch_inspect.py"), str(tmp_path / "shift"), "--out", str(rows),
                          "--checkpoint", str(graphed)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(rows.read_text().strip().splitlines()) == 1 + len(imgs)

    for script in ("train.py", "adapt.py", "calibrate_heatmap.py"):
        res = subprocess.run([sys.executable, str(REPO / script), "--checkpoint", "x", "--data", "y"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and "pip install -r requirements-train.txt" in res.stderr, (script, res.stderr)


def test_the_app_serves_where_torch_cannot_be_imported(graphed, tmp_path):
    import httpx
    from gradio_client import Client, handle_file

    from tests.app_server import free_port

    port = free_port()
    env = _no_torch_env(tmp_path, INSPECT_MODEL_PATH=str(graphed), GRADIO_SERVER_NAME="127.0.0.1",
                        GRADIO_SERVER_PORT=str(port))
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline, state = time.monotonic() + 180, None
        while time.monotonic() < deadline and state not in ("ready", "failed"):
            time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                state = httpx.get(url + "api/health", timeout=5).json()["model"]
            except httpx.HTTPError:
                pass
        assert state == "ready", (tmp_path / "server.log").read_text()
        img = _images(tmp_path / "up", 1)[0]
        with open(img, "rb") as f:
            r = httpx.post(url + "api/inspect", params={"heatmap": "true"}, files={"file": (img.name, f, "image/png")},
                           timeout=60)
        assert r.status_code == 200, r.text
        got = r.json()
        ref = InferenceHandler(graphed, backend="torch", threads=1).predict(str(img))
        assert got["verdict"] == ref.verdict and got["heatmap_png_base64"]
        assert got["defect_probability"] == pytest.approx(ref.defect_probability, abs=1e-5)
        client = Client(url, verbose=False)
        viaclient = client.predict(handle_file(str(img)), None, True, api_name="/predict")
        assert viaclient["verdict"] == ref.verdict and viaclient["heatmap_png_base64"]
        assert "requirements-train.txt" in httpx.get(url + "config", timeout=30).text  # the Adapt tab says so
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # open client connections can hold uvicorn's graceful shutdown
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    assert "No module named 'torch'" not in (tmp_path / "server.log").read_text()


# ----------------------------------------------------------------------------------------------------- the Hub


def _fake_hub(monkeypatch, tmp_path, remote: dict[str, Path]):
    """hf_hub_download from a dict of files: copies into one snapshot folder, FileNotFoundError for the rest."""
    import huggingface_hub

    snap = tmp_path / "snapshot"
    snap.mkdir(exist_ok=True)
    calls = []

    def fake_download(repo_id, filename, revision=None, repo_type=None):
        calls.append(filename)
        if filename not in remote:
            raise FileNotFoundError(f"{repo_id} has no {filename}")
        dest = snap / filename
        shutil.copy(remote[filename], dest)
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv(ENV_MODEL_REPO, "acme/casting-model")
    monkeypatch.delenv(ENV_MODEL_SHA256, raising=False)
    monkeypatch.setenv("INSPECTKIT_CACHE_DIR", str(tmp_path / "cache"))
    return calls


def _remote(ckpt: Path) -> dict[str, Path]:
    g = fast.graph_path(ckpt)
    return {"final_best_model.pt": ckpt, "final_best_model.pt.sha256": Path(str(ckpt) + ".sha256"),
            "final_best_model.onnx": g, "final_best_model.onnx.sha256": Path(str(g) + ".sha256")}


def test_the_hub_path_fetches_the_graph_with_the_model(graphed, tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, tmp_path, _remote(graphed))
    h = default_handler_factory(threads=1)()
    assert calls == ["final_best_model.pt", "final_best_model.pt.sha256", "final_best_model.onnx",
                     "final_best_model.onnx.sha256"]
    assert h.backend == "onnx" and h._fast.timings["source"] == "committed"
    assert h.sha256 == fast.sha256_file(graphed)
    assert not (tmp_path / "cache").exists()  # nothing built: the graph came from the Hub


def test_the_hub_graph_is_digest_checked(graphed, tmp_path, monkeypatch, caplog):
    remote = _remote(graphed)
    bad = tmp_path / "bad.sha256"
    bad.write_text("f" * 64 + "  final_best_model.onnx\n")
    remote["final_best_model.onnx.sha256"] = bad
    _fake_hub(monkeypatch, tmp_path, remote)
    path, expected = resolve_checkpoint()
    with pytest.raises(fast.GraphMismatch, match="f{64}"):
        fast.load_graph(fast.graph_path(path), path, fast.sha256_file(path))
    with caplog.at_level(logging.WARNING, logger="inspectkit.inference.fast"):  # torch is here: rebuilt in the cache
        h = default_handler_factory(threads=1)()
    assert h._fast.timings["source"] == "cache" and "f" * 64 in caplog.text
    # a graph without its .sha256 on the Hub could not be checked: refused
    del remote["final_best_model.onnx.sha256"]
    with pytest.raises(ValueError, match="final_best_model.onnx.sha256"):
        resolve_checkpoint()
    # no graph on the Hub at all: the checkpoint alone (the handler builds the graph where torch exists)
    del remote["final_best_model.onnx"]
    assert resolve_checkpoint()[0].name == "final_best_model.pt"
