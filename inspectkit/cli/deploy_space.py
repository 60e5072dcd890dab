"""Publish the app as a Hugging Face Space: create the Space repo and upload exactly the files it needs.

    python deploy_space.py --repo-id <user>/casting-inspection --dry-run    # list what would be uploaded
    HF_TOKEN=hf_... python deploy_space.py --repo-id <user>/casting-inspection

Only an explicit allow-list is uploaded: app.py, inference_handler.py, gradcam.py, inspectkit/ (Python files),
final_best_model.pt and its .sha256, final_best_model.onnx and its .sha256 (the graph the Space serves: it installs
requirements.txt, which has no torch), requirements.txt, README.md, examples/ and reports/. No data set, no
caches, no virtual environment, no tests, no tokens. Files in the Space that are not on the list are deleted
in the same commit (``--keep-remote`` leaves them). The README must carry the Space front matter; when it does
not, ``space/README_front_matter.yml`` is put on top of it in the uploaded copy (the local file is unchanged).

With ``--model-repo <user>/<model>`` the weights are not uploaded: the Space gets the variables
INSPECT_MODEL_REPO and (from the local final_best_model.pt.sha256) INSPECT_MODEL_SHA256, and downloads the
checkpoint and its graph (final_best_model.onnx and .onnx.sha256, which the model repo must hold) from that model
repo at start (hf_hub_download), checking both digests.

The token comes from the environment (HF_TOKEN, else HUGGING_FACE_HUB_TOKEN) and is never written anywhere.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from inspectkit.command import error
from inspectkit.paths import CHECKOUT

ROOT = CHECKOUT
FRONT_MATTER = ROOT / "space" / "README_front_matter.yml"

#: The files the Space runs from. Folders contribute only the listed suffixes; nothing else is ever uploaded.
ALLOW_FILES = ("app.py", "inference_handler.py", "gradcam.py", "requirements.txt", "README.md",
               "final_best_model.pt", "final_best_model.pt.sha256", "final_best_model.onnx",
               "final_best_model.onnx.sha256")
ALLOW_DIRS = {
    "inspectkit": (".py",),
    "examples": (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".md"),
    "reports": (".json", ".md", ".png"),
}
REQUIRED = ("app.py", "inference_handler.py", "requirements.txt", "README.md")
#: The model: the checkpoint and the graph the Space serves without torch (python export_onnx.py writes it).
WEIGHTS = ("final_best_model.pt", "final_best_model.pt.sha256", "final_best_model.onnx",
           "final_best_model.onnx.sha256")
#: Never uploaded even when inside an allowed folder.
DENY = re.compile(r"(^|/)(__pycache__|\.[^/]*|.*\.pyc|.*\.env|.*token.*|.*secret.*)$", re.IGNORECASE)
#: Something that looks like a Hugging Face access token inside a file: refuse to upload it.
TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")
#: The largest single file we expect; anything bigger is probably a data file that slipped into a folder.
MAX_FILE_BYTES = 200 * 1024 * 1024


class DeployError(Exception):
    """A problem the user can fix; the message says what and how."""


@dataclass
class Item:
    path_in_repo: str
    local: Path | None  # None for generated content
    content: bytes | None = None

    @property
    def size(self) -> int:
        """Bytes that will be uploaded."""
        return len(self.content) if self.content is not None else self.local.stat().st_size


def has_front_matter(text: str) -> bool:
    """True when the README starts with a YAML block (``---`` ... ``---``)."""
    return text.startswith("---") and "\n---" in text[3:]


def readme_for_space(root: Path = ROOT) -> bytes:
    """README.md as the Space gets it: with the front matter on top when the local file has none.

    The result is checked with huggingface_hub's SpaceCard (sdk gradio, app_file app.py)."""
    from huggingface_hub import SpaceCard

    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not has_front_matter(text):
        fm = root / "space" / "README_front_matter.yml"
        if not fm.is_file():
            raise DeployError("README.md has no Space front matter and space/README_front_matter.yml is missing")
        text = fm.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + text
    card = SpaceCard(text)
    if card.data.sdk != "gradio" or card.data.app_file != "app.py":
        raise DeployError(f"the Space front matter must say sdk: gradio and app_file: app.py, "
                          f"got sdk={card.data.sdk!r}, app_file={card.data.app_file!r}")
    return text.encode("utf-8")


def collect(root: Path = ROOT, with_weights: bool = True) -> list[Item]:
    """The files to upload, from the allow-list only; DeployError when a required one is missing."""
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    if with_weights:
        missing += [f for f in WEIGHTS if not (root / f).is_file()]
    if missing:
        hint = ""
        if any(m.endswith((".onnx", ".onnx.sha256")) for m in missing):
            hint = " (write the graph with: python export_onnx.py --checkpoint final_best_model.pt)"
        elif any(m in WEIGHTS for m in missing):
            hint = " (train the model with train.py, or use --model-repo)"
        raise DeployError(f"missing required files: {', '.join(missing)}{hint}")
    items: list[Item] = []
    for name in ALLOW_FILES:
        if name in WEIGHTS and not with_weights:
            continue
        if name == "README.md":
            items.append(Item("README.md", root / name, readme_for_space(root)))
        elif (root / name).is_file():
            items.append(Item(name, root / name))
    for folder, suffixes in ALLOW_DIRS.items():
        base = root / folder
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            parts = p.relative_to(root).parts
            rel = "/".join(parts)
            # any hidden or cache folder on the way (.ipynb_checkpoints/, .cache/, __pycache__/) disqualifies
            hidden = any(part.startswith(".") or part == "__pycache__" for part in parts)
            if p.is_file() and not p.is_symlink() and p.suffix.lower() in suffixes and not hidden \
                    and not DENY.search(rel):
                items.append(Item(rel, p))
    for it in items:
        if it.size > MAX_FILE_BYTES:
            raise DeployError(f"{it.path_in_repo} is {it.size / 1e6:.0f} MB; the limit for one file is "
                              f"{MAX_FILE_BYTES / 1e6:.0f} MB (is it a data file?)")
        data = it.content if it.content is not None else it.local.read_bytes()
        if TOKEN_PATTERN.search(data):
            raise DeployError(f"{it.path_in_repo} contains something that looks like a Hugging Face token; "
                              "remove it before deploying")
    return items


def get_token() -> str:
    """The write token from HF_TOKEN (or HUGGING_FACE_HUB_TOKEN); DeployError when neither is set."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise DeployError("no Hugging Face token: set HF_TOKEN to a token with write access "
                          "(https://huggingface.co/settings/tokens), or use --dry-run to only list the files")
    return token


def local_model_digest(root: Path = ROOT) -> str | None:
    """The SHA-256 recorded in the local final_best_model.pt.sha256, or None."""
    side = root / "final_best_model.pt.sha256"
    words = side.read_text().split() if side.is_file() else []
    return words[0].lower() if words and re.fullmatch(r"[0-9a-fA-F]{64}", words[0]) else None


def deploy(repo_id: str, items: list[Item], token: str, private: bool = False, model_repo: str | None = None,
           keep_remote: bool = False, model_sha256: str | None = None) -> str:
    """Create the Space (if needed) and upload ``items`` in one commit; returns the Space URL.

    With ``model_repo``, the Space gets INSPECT_MODEL_REPO (and INSPECT_MODEL_SHA256 = ``model_sha256``, so the
    downloaded model is checked even when the model repo has no .sha256)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        ops = [CommitOperationAdd(it.path_in_repo, it.content if it.content is not None else str(it.local))
               for it in items]
        if not keep_remote:
            wanted = {it.path_in_repo for it in items} | {".gitattributes"}
            stale = [f for f in api.list_repo_files(repo_id, repo_type="space") if f not in wanted]
            ops += [CommitOperationDelete(f) for f in stale]
        api.create_commit(repo_id, ops, repo_type="space", commit_message="Deploy the casting inspection app")
        if model_repo:
            api.add_space_variable(repo_id, "INSPECT_MODEL_REPO", model_repo,
                                   description="Hub model repo holding final_best_model.pt")
            if model_sha256:
                api.add_space_variable(repo_id, "INSPECT_MODEL_SHA256", model_sha256,
                                       description="SHA-256 the downloaded model must have")
    except Exception as exc:  # offline, bad token, no permission, name taken...: one clear line
        text = str(exc).splitlines()[0] if str(exc) else ""
        if "offline" in text.lower() or type(exc).__name__ in ("ConnectError", "ConnectionError", "ConnectTimeout",
                                                                 "OfflineModeIsEnabled"):
            raise DeployError(f"cannot reach the Hugging Face Hub ({type(exc).__name__}: {text}); "
                              "check the network connection (and that HF_HUB_OFFLINE is not set)") from None
        raise DeployError(f"deploying to the Space {repo_id!r} failed: {type(exc).__name__}: {text}") from None
    return f"https://huggingface.co/spaces/{repo_id}"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 a problem explained on stderr)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo-id", help="the Space, <user or org>/<name> (required unless --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded, and stop")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--model-repo", help="Hub model repo with final_best_model.pt: upload no weights, set INSPECT_MODEL_REPO")
    p.add_argument("--keep-remote", action="store_true", help="do not delete Space files that are not on the list")
    p.add_argument("--root", type=Path, default=None,
                   help="the project folder to upload from (default: the checkout this package is in)")
    a = p.parse_args(argv)
    root = a.root if a.root is not None else ROOT
    if a.repo_id is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", a.repo_id):
        error("deploy_space.py", f"--repo-id {a.repo_id!r} must look like <user>/<space-name>")
        return 2
    try:
        items = collect(root, with_weights=not a.model_repo)
        if a.dry_run:
            total = sum(it.size for it in items)
            for it in items:
                note = "  (front matter added)" if it.path_in_repo == "README.md" and it.local is not None and \
                    not has_front_matter(it.local.read_text(encoding="utf-8")) else ""
                print(f"{it.size:>12,}  {it.path_in_repo}{note}")
            print(f"{len(items)} files, {total / 1e6:.1f} MB -> {a.repo_id or '<repo-id>'} (dry run: nothing uploaded)")
            return 0
        if not a.repo_id:
            raise DeployError("--repo-id is required to deploy (e.g. --repo-id alice/casting-inspection)")
        digest = local_model_digest(root) if a.model_repo else None
        if a.model_repo and digest is None:
            print("deploy_space.py: note: no local final_best_model.pt.sha256, so INSPECT_MODEL_SHA256 is not set; "
                  "the model repo must hold final_best_model.pt.sha256 or the Space refuses the model",
                  file=sys.stderr)
        url = deploy(a.repo_id, items, get_token(), private=a.private, model_repo=a.model_repo,
                     keep_remote=a.keep_remote, model_sha256=digest)
    except DeployError as exc:
        error("deploy_space.py", str(exc))
        return 2
    print(f"Deployed {len(items)} files to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
