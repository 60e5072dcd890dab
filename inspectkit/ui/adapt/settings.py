"""The Adapt tab's budget (``INSPECT_ADAPT_*`` variables) and what it needs installed: small on purpose, since a Space
has two cores and keeps inspecting while it adapts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "INSPECT_ADAPT_"


#: inference_handler.BACKENDS (repeated so building the UI imports no handler; a test checks they agree).
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class AdaptSettings:
    """The adaptation budget of the app, and how adapted or uploaded models are served.

    Small on purpose: a Space has two cores and keeps inspecting while it adapts. ``threads`` is the torch
    threads adaptation uses (the rest of the CPU stays with inspection); ``replay`` is as in AdaptConfig
    ('auto': the parent's training photos when they are on disk, else none); ``backend`` is the
    InferenceHandler backend for the adapted/uploaded model ('auto': ONNX Runtime when equivalent).
    """

    views: int = 4
    stage1_epochs: int = 10
    stage2_epochs: int = 5
    replay: str = "auto"
    threads: int = 1
    seed: int = 0
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("views", "stage1_epochs", "stage2_epochs", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100:
                raise ValueError(f"adaptation setting {name}={v!r} must be a whole number from 1 to 100")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"adaptation setting seed={self.seed!r} must be a whole number >= 0")
        if not isinstance(self.replay, str) or not self.replay:
            raise ValueError(f"adaptation setting replay={self.replay!r} must be 'auto', 'none' or a data folder")
        if self.backend not in BACKENDS:
            raise ValueError(f"adaptation setting backend={self.backend!r} must be one of {list(BACKENDS)}")

    @classmethod
    def from_env(cls, env: dict | None = None) -> AdaptSettings:
        """Defaults, overridden by ``INSPECT_ADAPT_VIEWS``, ``..._STAGE1_EPOCHS``, ``..._STAGE2_EPOCHS``,
        ``..._REPLAY``, ``..._THREADS``, ``..._SEED`` and ``..._BACKEND``. A bad value is a ValueError naming
        the variable and what it may be."""
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            raw = env.get(key)
            if raw is None or raw.strip() == "":
                continue
            if f.type in ("int", int):
                try:
                    kw[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{key}={raw!r} is not a whole number") from None
            else:
                kw[f.name] = raw.strip()
        try:
            return cls(**kw)
        except ValueError as exc:
            raise ValueError(f"{exc} (set through {ENV_PREFIX}* environment variables)") from None

    def describe(self) -> str:
        """The budget in words, for the tab."""
        replay = {"auto": "the parent's own training photos when they are on this server",
                  "none": "none (the model adapts to the new line alone)"}.get(self.replay, f"`{self.replay}`")
        return (f"{self.views} view{'s' if self.views != 1 else ''} per photo, at most {self.stage1_epochs} + "
                f"{self.stage2_epochs} epochs, {self.threads} torch thread{'s' if self.threads != 1 else ''}, "
                f"seed {self.seed}; replay: {replay}")


def _no_torch_note() -> str:
    """A warning line when this server has no torch (installed from requirements.txt only), else nothing."""
    from inspectkit.inference.fast import TRAIN_INSTALL, torch_missing

    if torch_missing("adaptation") is None:
        return ""
    return (f"\n**Not available on this server**: fine-tuning and loading a checkpoint need torch, which is not "
            f"installed here (the app serves through ONNX Runtime). Scoring the current model works. Install "
            f"torch with `{TRAIN_INSTALL}`.\n")


def require_torch(what: str) -> None:
    """ValueError (shown as the tab's error) saying ``what`` needs torch and how to install it, when it is not."""
    from inspectkit.inference.fast import torch_missing

    missing = torch_missing(what)
    if missing:
        raise ValueError(missing)
