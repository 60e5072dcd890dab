"""Shared fixtures: generated data-set trees, checkpoints written by the real save function, the handler and a real
server on loopback. The plain helpers they use are in tests/support.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import add_guard, write_checkpoint, write_images


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on a
    shared 2-core machine OpenMP's spinning makes 2 threads far slower than 1 when other processes are busy. Results
    do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def casting_tree(tmp_path: Path) -> Path:
    """A tiny copy of the Kaggle layout: train/test x def_front/ok_front, generated."""
    r = np.random.default_rng(1)
    root = tmp_path / "casting"
    for split, n in (("train", 24), ("test", 8)):
        write_images(root / split / "def_front", r, n, True, prefix=f"cast_def_{split}")
        write_images(root / split / "ok_front", r, n, False, prefix=f"cast_ok_{split}")
    return root


@pytest.fixture(scope="session")
def guarded_checkpoint(tmp_path_factory) -> Path:
    """The tiny checkpoint with a guard fitted on generated castings (random weights; the image checks are what
    tests rely on: a generated casting passes them, a blank, dark, blown-out or blurred frame does not)."""
    return add_guard(write_checkpoint(tmp_path_factory.mktemp("guarded") / "model.pt"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A binary MobileNetV2 checkpoint (random weights, 96 px) saved with save_checkpoint."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="session")
def handler(tiny_checkpoint, tmp_path_factory):
    """The production configuration (backend "auto": the ONNX fast path) on the tiny random-weight model, one thread.
    The ONNX cache sits in the session's base temp folder, so the graph is exported once per session."""
    from inspectkit.inference.handler import InferenceHandler

    return InferenceHandler(tiny_checkpoint, backend="auto", cache_dir=tmp_path_factory.getbasetemp() / "onnx-cache",
                            threads=1)


@pytest.fixture(scope="module")
def server(handler):
    """The whole app (Gradio UI and JSON API) serving ``handler`` on a free loopback port; yields its URL."""
    from tests.app_server import running_server

    with running_server(handler) as url:
        yield url


@pytest.fixture(scope="session")
def trained_archs(tmp_path_factory):
    """Tiny models of each architecture, really trained on generated castings (tests/trained_tiny.py)."""
    from tests.trained_tiny import train_archs

    return train_archs(tmp_path_factory.mktemp("trained"))
