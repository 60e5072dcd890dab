"""Safety: model files that were changed or carry pickled code are refused with clear messages (checkpoint
loader, InferenceHandler, the app's model loading and its HTTP answers, a model from the Hub), and hostile
file names are harmless everywhere they appear (API JSON, Gradio upload storage, gallery captions, HTML, CSV).
The deploy command's allow-list is checked in the last section."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
import unicodedata
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from inspectkit.limits import MAX_NAME_CHARS
from inspectkit.names import safe_name
from inspectkit.serve.model_source import (
    DEFAULT_CHECKPOINT,
    ENV_MODEL_FILE,
    ENV_MODEL_PATH,
    ENV_MODEL_REPO,
    ENV_MODEL_REVISION,
    ENV_MODEL_SHA256,
    LazyHandler,
    ModelUnavailable,
    default_handler_factory,
)
from tests.support import COMMITTED_MODEL, REPO, synthetic_casting, write_checkpoint

# Characters that must never reach a display name: C0/C1 controls (newline, tab, escape...), zero-width and
# bidirectional overrides (which make "gpj.exe" read as "exe.jpg").
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def judged(verdict, reason) -> bool:
    """A verdict the app may give: OK or DEFECT without a reason, or UNUSABLE (a model with a guard) with one."""
    from inspectkit.guard import REASONS

    return (verdict in ("OK", "DEFECT") and reason is None) or (verdict == "UNUSABLE" and reason in REASONS)

HOSTILE_NAMES = [
    "../../etc/passwd.jpg",
    "..\\..\\windows\\win.ini.jpg",
    "/absolute/path/part.jpg",
    '=HYPERLINK("x")|cmd.jpg',
    "+cmd|' /C calc'!A0.jpg",
    "@SUM(1+1)*cmd.jpg",
    "-2+3.jpg",
    "\t=1+1.jpg",
    "line\nbreak\r\n.jpg",
    'quote"double\'single.jpg',
    "<img src=x onerror=alert(1)>.jpg",
    "ünïcødé 铸件 💥.jpg",
    "\u202egpj.exe",  # right-to-left override: shows as "exe.jpg" reversed
    "zero\u200bwidth.jpg",
    "a" * 300 + ".jpg",
    "..",
    "",
]


def assert_harmless_name(shown: str, *, max_chars: int | None = None) -> None:
    """A display name is harmless: one path component, no control/bidi characters, bounded length."""
    assert isinstance(shown, str) and shown.strip(), repr(shown)
    assert "/" not in shown and "\\" not in shown, shown
    assert shown not in (".", ".."), shown
    assert not UNSAFE_CHARS.search(shown), repr(shown)
    if max_chars is not None:
        assert len(shown) <= max_chars, len(shown)


def jpeg_bytes(seed: int = 0, size: int = 64) -> bytes:
    import cv2

    rgb = synthetic_casting(np.random.default_rng(seed), bool(seed % 2), (size, size))
    return cv2.imencode(".jpg", rgb[:, :, ::-1])[1].tobytes()


# -- hostile model files ---------------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this runs ``exec(code)``: what a malicious checkpoint carries."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        import builtins

        return (builtins.exec, (self.code,))


def tampered_checkpoint(folder: Path) -> Path:
    """A real checkpoint with one weight byte changed after saving: torch still loads it, only the recorded
    SHA-256 (the sidecar written at save time) can tell."""
    p = write_checkpoint(folder / "tampered.pt")
    raw = bytearray(p.read_bytes())
    i = len(raw) // 2  # deep inside the tensor data, away from the zip directory at the end
    raw[i] ^= 0x01
    p.write_bytes(bytes(raw))
    torch.load(p, weights_only=True)  # the change is silent to torch: the digest check is what must catch it
    return p


def code_checkpoint(folder: Path, marker: Path, whole: bool = False) -> Path:
    """A checkpoint whose pickle runs code (creating ``marker``); its sidecar digest is *correct*, as an attacker
    who replaces both files would make it, so only weights-only loading stands in the way."""
    from inspectkit.inference.checkpoint import digest_path, sha256_file

    good = folder / "good.pt"
    write_checkpoint(good)
    ckpt = torch.load(good, weights_only=True)
    payload = _RunsCode(f"open({str(marker)!r}, 'w').write('pwned')")
    if whole:
        obj = payload
    else:
        ckpt["metrics"] = {"note": payload}
        obj = ckpt
    p = folder / ("code_whole.pt" if whole else "code.pt")
    torch.save(obj, p)
    digest_path(p).write_text(f"{sha256_file(p)}  {p.name}\n")
    return p


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "onnx-cache"


@pytest.mark.parametrize("backend", ["auto", "torch", "onnx"])
def test_tampered_model_is_refused_by_the_handler(tmp_path, onnx_cache, backend):
    from inspectkit.inference.handler import InferenceHandler

    p = tampered_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"SHA-256.*(changed|corrupted)") as exc:
        InferenceHandler(p, backend=backend, cache_dir=onnx_cache)
    assert "refusing" in str(exc.value)


@pytest.mark.parametrize("backend", ["auto", "torch", "onnx"])
def test_wrong_expected_digest_is_refused_even_without_a_sidecar(tmp_path, onnx_cache, backend):
    from inspectkit.inference.checkpoint import digest_path
    from inspectkit.inference.handler import InferenceHandler

    p = write_checkpoint(tmp_path / "m.pt")
    digest_path(p).unlink()
    with pytest.raises(ValueError, match="SHA-256"):
        InferenceHandler(p, backend=backend, expected_sha256="0" * 64, cache_dir=onnx_cache)
    with pytest.raises(ValueError, match="not a SHA-256 digest"):
        InferenceHandler(p, backend=backend, expected_sha256="abc", cache_dir=onnx_cache)


@pytest.mark.slow
@pytest.mark.parametrize("whole", [False, True], ids=["payload-in-metadata", "payload-is-the-file"])
@pytest.mark.parametrize("backend", ["auto", "torch", "onnx"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, onnx_cache, backend, whole):
    from inspectkit.inference.handler import InferenceHandler

    marker = tmp_path / "PWNED"
    p = code_checkpoint(tmp_path, marker, whole=whole)
    with pytest.raises(ValueError, match=r"(code|weights-only)") as exc:
        InferenceHandler(p, backend=backend, cache_dir=onnx_cache)
    assert not marker.exists(), "the checkpoint's code ran"
    assert "exec" in str(exc.value) or "Python objects or code" in str(exc.value)
    # and the unsafe way really would have run it: the fixture is a live payload, not a broken file
    torch.load(p, weights_only=False)
    assert marker.exists()


def test_the_committed_model_has_a_recorded_digest_that_matches():
    """The committed model's SHA-256 is recorded beside it (and in git), and loading checks it."""
    if not COMMITTED_MODEL.is_file():
        pytest.skip("final_best_model.pt is not committed yet")
    from inspectkit.inference.checkpoint import digest_path, sha256_file
    from inspectkit.inference.fast import verified_digest

    sidecar = digest_path(COMMITTED_MODEL)
    assert sidecar.is_file(), f"{sidecar.name} must be committed beside the model"
    recorded = sidecar.read_text().split()[0]
    assert re.fullmatch(r"[0-9a-f]{64}", recorded)
    assert recorded == sha256_file(COMMITTED_MODEL)
    assert verified_digest(COMMITTED_MODEL) == recorded


# -- the app's model loading -----------------------------------------------------------------------------------
def _clear_model_env(monkeypatch):

    for var in (ENV_MODEL_REPO, ENV_MODEL_FILE, ENV_MODEL_REVISION, ENV_MODEL_PATH,
                ENV_MODEL_SHA256):
        monkeypatch.delenv(var, raising=False)


def _app_load(monkeypatch, onnx_cache):
    """What the app does at start: resolve the checkpoint from the environment, build the handler in the
    background (LazyHandler), wait for it."""

    monkeypatch.setenv("INSPECTKIT_CACHE_DIR", str(onnx_cache))
    lazy = LazyHandler(default_handler_factory(threads=1))
    return lazy, lazy.wait(timeout=120)


@pytest.mark.parametrize("kind", ["tampered", "code", "pinned-digest-mismatch"])
def test_app_refuses_a_bad_local_model_with_a_clear_message(tmp_path, monkeypatch, onnx_cache, kind):

    _clear_model_env(monkeypatch)
    marker = tmp_path / "PWNED"
    if kind == "tampered":
        p, pattern = tampered_checkpoint(tmp_path), r"SHA-256"
    elif kind == "code":
        p, pattern = code_checkpoint(tmp_path, marker), r"(code|weights-only)"
    else:
        p, pattern = write_checkpoint(tmp_path / "m.pt"), r"SHA-256"
        monkeypatch.setenv(ENV_MODEL_SHA256, "f" * 64)
    monkeypatch.setenv(ENV_MODEL_PATH, str(p))
    with pytest.raises(ModelUnavailable, match=pattern) as exc:
        _app_load(monkeypatch, onnx_cache)
    assert "could not be loaded" in str(exc.value)
    assert not marker.exists()


class FakeHub:
    """Stands in for ``huggingface_hub.hf_hub_download``: serves files from a folder as a snapshot folder would
    (the checkpoint and its sidecar side by side), and raises for a file the "repo" does not have."""

    def __init__(self, repo_dir: Path, snapshot: Path):
        self.repo_dir, self.snapshot, self.calls = repo_dir, snapshot, []

    def __call__(self, repo_id, filename, revision=None, repo_type=None, **kw):
        self.calls.append((repo_id, filename, revision, repo_type))
        src = self.repo_dir / filename
        if not src.is_file():
            raise FileNotFoundError(f"404: {filename} not in {repo_id}")
        self.snapshot.mkdir(parents=True, exist_ok=True)
        dst = self.snapshot / filename
        shutil.copyfile(src, dst)
        return str(dst)


@pytest.mark.parametrize("kind", ["good", "tampered", "code", "pinned-digest-mismatch"])
def test_a_model_from_the_hub_is_checked_the_same_way(tmp_path, monkeypatch, onnx_cache, kind):
    import huggingface_hub


    _clear_model_env(monkeypatch)
    hub_repo = tmp_path / "hub-repo"
    hub_repo.mkdir()
    marker = tmp_path / "PWNED"
    if kind == "tampered":
        src = tampered_checkpoint(hub_repo)
    elif kind == "code":
        src = code_checkpoint(hub_repo, marker)
    else:
        src = write_checkpoint(hub_repo / "m.pt")
    # the Hub repo holds the model under the app's default name, with its sidecar
    (hub_repo / DEFAULT_CHECKPOINT).write_bytes(src.read_bytes())
    (hub_repo / (DEFAULT_CHECKPOINT + ".sha256")).write_text(Path(str(src) + ".sha256").read_text())
    hub = FakeHub(hub_repo, tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    monkeypatch.setenv(ENV_MODEL_REPO, "acme/casting-inspector")
    if kind == "pinned-digest-mismatch":
        monkeypatch.setenv(ENV_MODEL_SHA256, "e" * 64)
    if kind == "good":
        lazy, handler = _app_load(monkeypatch, onnx_cache)
        r = handler.predict(jpeg_bytes())
        assert judged(r.verdict, r.unusable_reason), (r.verdict, r.unusable_reason)
        # the graph is asked for too (this repo has none: the handler builds it; tests/unit/test_lean_serving.py has one)
        assert {c[1] for c in hub.calls} == {DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT + ".sha256",
                                             "final_best_model.onnx"}
        return
    with pytest.raises(ModelUnavailable, match=r"(SHA-256|code|weights-only)"):
        _app_load(monkeypatch, onnx_cache)
    assert not marker.exists()


def test_a_hub_model_without_any_recorded_digest_is_not_loaded_unchecked(tmp_path, monkeypatch, onnx_cache):
    import huggingface_hub


    _clear_model_env(monkeypatch)
    hub_repo = tmp_path / "hub-repo"
    hub_repo.mkdir()
    write_checkpoint(hub_repo / DEFAULT_CHECKPOINT)
    Path(str(hub_repo / DEFAULT_CHECKPOINT) + ".sha256").unlink()  # the repo has the weights only
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub(hub_repo, tmp_path / "snapshot"))
    monkeypatch.setenv(ENV_MODEL_REPO, "acme/casting-inspector")
    with pytest.raises(ModelUnavailable, match=ENV_MODEL_SHA256):
        _app_load(monkeypatch, onnx_cache)


@pytest.fixture
def failed_server(tmp_path, monkeypatch, onnx_cache):
    """The real server (app factory, uvicorn on loopback) whose model file was tampered with."""
    from tests.app_server import running_server


    _clear_model_env(monkeypatch)
    monkeypatch.setenv(ENV_MODEL_PATH, str(tampered_checkpoint(tmp_path)))
    monkeypatch.setenv("INSPECTKIT_CACHE_DIR", str(onnx_cache))
    lazy = LazyHandler(default_handler_factory(threads=1))
    with running_server(lazy) as url:
        deadline = time.monotonic() + 120
        while lazy.state in ("loading", "not started") and time.monotonic() < deadline:
            time.sleep(0.1)  # loading starts once the server is up, and fails at the digest check
        yield url, lazy


def test_server_with_a_tampered_model_says_so_and_keeps_serving(failed_server):
    """Health reports the failure and why; an inspection gets 503 with the reason, not a crash or a hang;
    the page itself still loads."""
    url, lazy = failed_server
    assert lazy.state == "failed"
    with httpx.Client(base_url=url, timeout=60) as c:
        health = c.get("/api/health").json()
        assert health["model"] == "failed" and "SHA-256" in health["error"]
        r = c.post("/api/inspect", files={"file": ("part.jpg", jpeg_bytes(), "image/jpeg")})
        assert r.status_code == 503
        assert "SHA-256" in r.json()["detail"] and "could not be loaded" in r.json()["detail"]
        assert c.get("/").status_code == 200


# -- hostile file names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[:40])
def test_safe_name_makes_every_hostile_name_harmless(name):

    shown = safe_name(name)
    assert_harmless_name(shown, max_chars=MAX_NAME_CHARS)
    if name.startswith("../../etc/"):
        assert shown == "passwd.jpg"


@pytest.fixture(scope="module")
def real_handler(tiny_checkpoint, onnx_cache):
    from inspectkit.inference.handler import InferenceHandler

    return InferenceHandler(tiny_checkpoint, cache_dir=onnx_cache, threads=1)


@pytest.fixture(scope="module")
def server(real_handler):
    from tests.app_server import running_server

    with running_server(real_handler) as url:
        yield url


def _multipart(filename_header: bytes, data: bytes, field: bytes = b"file",
               boundary: bytes = b"----fuzzboundary7d3") -> tuple[bytes, str]:
    """A multipart body written by hand, so the file name reaches the server byte for byte (httpx would
    percent-encode quotes and newlines)."""
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + field + b"\"; filename=\""
            + filename_header
            + b"\"\r\nContent-Type: image/jpeg\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n")
    return body, "multipart/form-data; boundary=" + boundary.decode()


@pytest.mark.slow
@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[:40])
@pytest.mark.parametrize("encoding", ["httpx", "raw"])
def test_api_json_shows_hostile_names_harmlessly(server, name, encoding):
    """POST /api/inspect with a hostile file name: never a server error; the JSON name is one harmless
    component (and the JSON stays valid), whether the name arrives percent-encoded or byte for byte."""

    with httpx.Client(base_url=server, timeout=60) as c:
        if encoding == "httpx":
            r = c.post("/api/inspect", files={"file": (name, jpeg_bytes(), "image/jpeg")})
        else:
            body, ctype = _multipart(name.encode("utf-8", "surrogatepass"), jpeg_bytes())
            r = c.post("/api/inspect", content=body, headers={"content-type": ctype})
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.json()["detail"]  # a message, not a crash
        return
    out = json.loads(r.text)
    assert judged(out["verdict"], out["unusable_reason"]), out
    assert_harmless_name(out["name"], max_chars=MAX_NAME_CHARS)
    if name.startswith("../../etc/"):
        assert out["name"] == "passwd.jpg"
    if name == "ünïcødé 铸件 💥.jpg" and encoding == "raw":
        assert out["name"] == unicodedata.normalize("NFC", name)  # harmless names are shown unchanged


@pytest.mark.parametrize("name", HOSTILE_NAMES[:12], ids=lambda n: repr(n)[:40])
def test_gradio_upload_stores_hostile_names_inside_its_cache(server, real_handler, name):
    """The Gradio upload route keeps the file inside its own cache folder whatever the name says, and the
    /predict endpoint's JSON shows the stored file's name harmlessly."""
    import gradio.utils

    from inspectkit.ui.common import support as ui

    body, ctype = _multipart(name.encode("utf-8"), jpeg_bytes(), field=b"files")
    with httpx.Client(base_url=server, timeout=60) as c:
        r = c.post("/gradio_api/upload", content=body, headers={"content-type": ctype})
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.text[:300]  # a refusal, never a server error
    if r.status_code != 200:
        return
    (stored,) = r.json()
    cache = Path(gradio.utils.get_upload_folder()).resolve()
    assert Path(stored).resolve().is_relative_to(cache), stored
    assert Path(stored).is_file()
    out = ui.api_predict(real_handler, stored, None, False)
    assert_harmless_name(out["name"], max_chars=MAX_NAME_CHARS)
    json.dumps(out, allow_nan=False)


# Names a Linux file can carry (no "/" and no NUL): these reach the UI as the stored file's own name.
LEGAL_NAMES = [n for n in HOSTILE_NAMES if "/" not in n and n not in ("", "..")]


def _hostile_batch(folder: Path) -> list[str]:
    """Files with the legal hostile names, one folder each as Gradio's cache keeps them; every fourth is not an
    image, so error rows (whose messages name the file) appear too."""
    paths = []
    for i, name in enumerate(LEGAL_NAMES):
        d = folder / f"u{i}"
        d.mkdir()
        p = d / name[:250]  # the OS limit on one name is 255 bytes
        p.write_bytes(jpeg_bytes(i) if i % 4 else b"not an image at all")
        paths.append(str(p))
    return paths


def test_ui_gallery_html_table_and_csv_show_hostile_names_harmlessly(tmp_path, real_handler):
    """One batch of files with hostile names through the UI pipeline with the real handler: gallery captions,
    the HTML badge and summary, the table and the CSV all show harmless names; no CSV cell can run as a
    formula; the CSV has exactly one row per file."""
    from inspectkit.ui.common.session import inspect

    paths = _hostile_batch(tmp_path)
    *_, last = inspect(real_handler, paths, None, 0.45, None)
    state, progress, summary, gallery, badge, original, overlay, probs, latency, table, csv_path, label_next = last
    assert len(gallery) == len(paths) == len(table)
    assert sum(r[1] == "ERROR" for r in table) == sum(1 for i in range(len(paths)) if i % 4 == 0)
    for row in table:
        assert_harmless_name(row[0], max_chars=MAX_NAME_CHARS)
    for _img, caption in gallery:  # the gallery leads with defects; each caption starts with a harmless name
        assert not UNSAFE_CHARS.search(caption), repr(caption)
        assert any(caption.startswith(row[0] + " \u2014 ") for row in table), repr(caption)
    for html_text in (summary, badge):
        assert "<img" not in html_text  # escaped: &lt;img ...
    raw = Path(csv_path).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    assert len(rows) == len(paths) + 1
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(FORMULA_START), repr(cell)
    names_in_csv = [r[0].removeprefix("'") for r in rows[1:]]
    assert names_in_csv == [r[0] for r in table]


def test_error_messages_show_hostile_names_harmlessly(tmp_path, real_handler):
    """A file that cannot be read is reported with its name: in the table's note, the CSV's error column, the
    summary and the /predict_batch JSON that name must be as harmless as the name column (no newline, tab or
    bidi override smuggled in through the message)."""
    from inspectkit.ui.common.session import inspect
    from inspectkit.ui.common.support import api_predict_batch

    paths = _hostile_batch(tmp_path)
    bad = [p for i, p in enumerate(paths) if i % 4 == 0]
    *_, last = inspect(real_handler, bad, None, 0.45, None)
    state, progress, summary, gallery, badge, original, overlay, probs, latency, table, csv_path, label_next = last
    rows = list(csv.reader(io.StringIO(Path(csv_path).read_text(encoding="utf-8-sig"), newline="")))
    api = api_predict_batch(real_handler, bad, None)
    messages = [r[5] for r in table] + [r[6] for r in rows[1:]] + [a["error"] for a in api] + [summary]
    assert all(messages)
    for m in messages:
        assert not UNSAFE_CHARS.search(m), repr(m)


# -- deploy allow-list -----------------------------------------------------------------------------------------
# The deploy command must upload only what the Space runs from, and take its token only from the environment.
# A fake project tree holds every kind of thing that must stay at home next to the files that must go.
SPACE_FILES = {"app.py", "inference_handler.py", "gradcam.py", "requirements.txt", "README.md",
               "final_best_model.pt", "final_best_model.pt.sha256", "final_best_model.onnx",
               "final_best_model.onnx.sha256", "inspectkit/__init__.py", "inspectkit/service.py",
               "examples/cast_def_0_1.jpeg", "examples/ATTRIBUTION.md", "reports/metrics.json",
               "reports/confusion_matrix.png"}
MUST_STAY = [".env", ".git/config", ".venv/lib/site.py", "data/casting/train/ok_front/a.jpeg", "runs/run1.log",
             "inspectkit/__pycache__/service.cpython-311.pyc", "tests/app/test_app.py", ".hypothesis/examples/x",
             "artifacts/model.onnx", "examples/.DS_Store", "examples/my_token.md", "examples/secret_notes.md",
             "examples/raw.tiff", "hf_cache/token", "benchmarks/loadtest.py",
             "deploy_space.py", "space/README_front_matter.yml", "examples/passwd.jpeg"]


@pytest.fixture
def project(tmp_path):
    """A project tree with the Space's files plus everything that must never be uploaded (data, caches, venv,
    tests, tokens, hidden files, a symlink out of the tree)."""
    root = tmp_path / "project"
    for rel in SPACE_FILES | set(MUST_STAY):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (root / "README.md").write_text((REPO / "space" / "README_front_matter.yml").read_text() + "\n# App\n")
    (root / ".env").write_text("HF_TOKEN=hf_" + "A" * 34 + "\n")
    (root / "hf_cache" / "token").write_text("hf_" + "B" * 34)
    (root / "examples" / "passwd.jpeg").unlink()
    (root / "examples" / "passwd.jpeg").symlink_to("/etc/passwd")  # an allowed suffix, but a link out of the tree
    return root


def test_deploy_collects_only_the_allow_list(project):
    from inspectkit.cli import deploy_space

    got = {it.path_in_repo for it in deploy_space.collect(project)}
    assert got == SPACE_FILES, (sorted(got - SPACE_FILES), sorted(SPACE_FILES - got))


@pytest.mark.parametrize("hidden", ["reports/.ipynb_checkpoints/metrics-checkpoint.json", "examples/.cache/a.jpeg"])
def test_deploy_skips_files_inside_hidden_folders(project, hidden):
    from inspectkit.cli import deploy_space

    (project / hidden).parent.mkdir(parents=True, exist_ok=True)
    (project / hidden).write_bytes(b"x")
    got = {it.path_in_repo for it in deploy_space.collect(project)}
    assert hidden not in got


@pytest.mark.parametrize("where", ["app.py", "examples/ATTRIBUTION.md", "reports/metrics.json"])
def test_deploy_refuses_a_token_inside_an_allowed_file(project, where):
    from inspectkit.cli import deploy_space

    (project / where).write_text("token = 'hf_" + "C" * 34 + "'\n")
    with pytest.raises(deploy_space.DeployError, match="token"):
        deploy_space.collect(project)


class _FakeHfApi:
    """Records what the deploy command would send to the Hub (nothing leaves the machine)."""

    instances: list = []

    def __init__(self, token=None, **kw):
        self.token, self.ops = token, []
        _FakeHfApi.instances.append(self)

    def create_repo(self, *a, **kw):
        return None

    def list_repo_files(self, *a, **kw):
        return ["old_data.csv", ".gitattributes"]

    def create_commit(self, repo_id, operations, **kw):
        self.ops = list(operations)

    def add_space_variable(self, *a, **kw):
        return None


@pytest.fixture
def fake_hub(monkeypatch, project):
    import huggingface_hub

    from inspectkit.cli import deploy_space

    _FakeHfApi.instances = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHfApi)
    monkeypatch.setattr(deploy_space, "ROOT", project)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # a token saved by `huggingface-cli login` must NOT be used: tokens come from the environment only
    hf_home = project / "hf_cache"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_TOKEN_PATH", str(hf_home / "token"))
    return _FakeHfApi


def test_deploy_uses_the_environment_token_and_uploads_only_the_space_files(fake_hub, monkeypatch, capsys):
    from inspectkit.cli import deploy_space

    token = "hf_" + "E" * 34
    monkeypatch.setenv("HF_TOKEN", token)
    assert deploy_space.main(["--repo-id", "alice/casting-inspection"]) == 0
    (api,) = fake_hub.instances
    assert api.token == token
    added = {op.path_in_repo for op in api.ops if type(op).__name__ == "CommitOperationAdd"}
    deleted = {op.path_in_repo for op in api.ops if type(op).__name__ == "CommitOperationDelete"}
    assert added == SPACE_FILES and deleted == {"old_data.csv"}
    out = capsys.readouterr()
    assert token not in out.out + out.err  # never printed


def test_deploy_without_an_environment_token_is_refused(fake_hub, capsys):
    """A token file on disk (HF_HOME/token) is not picked up: no environment token, no upload."""
    from inspectkit.cli import deploy_space

    assert deploy_space.main(["--repo-id", "alice/casting-inspection"]) == 2
    assert not fake_hub.instances
    assert "HF_TOKEN" in capsys.readouterr().err
