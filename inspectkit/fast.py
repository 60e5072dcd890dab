"""The fast CPU path: an ONNX Runtime graph generated from the checkpoint, returning logits and last-block features.

The ``.pt`` checkpoint stays the single source of truth. The graph is generated from it on first use, checked
against PyTorch at generation (logits and features), and cached in ``<cache dir>/<sha256 of the .pt>/``
together with what inference needs from the checkpoint (``meta.json``: classes, threshold, preprocessing,
metadata; ``head.npz``: the linear head). A cached load therefore never imports torch: hash the ``.pt``,
read two small files, open the ONNX Runtime session.

Why features as a second output: with global-average-pool + linear head, Grad-CAM at the last block equals
``ReLU(sum_k w_ck A_k)`` up to a positive factor (see :func:`inspectkit.heatmap.cam_from_features`), so one
forward pass gives the verdict and the heat map, with no backward pass.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .digest import sha256_file

log = logging.getLogger(__name__)

#: Bump when the cached files change meaning; old cache entries are then regenerated.
CACHE_VERSION = 1
#: Largest difference between ONNX Runtime and PyTorch accepted when the graph is generated.
EXPORT_TOLERANCE = 1e-3
#: Layers at which the ONNX graph's features give the exact CAM (output -> global average pool -> linear).
EXACT_LAYERS = {"mobilenet_v2": "features.18", "resnet18": "layer4"}
#: The optional INT8 graph, beside the FP32 one in the cache entry.
INT8_FILE = "model.int8.onnx"


def default_cache_dir() -> Path:
    """``$INSPECTKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/inspectkit``, else ``~/.cache/inspectkit``."""
    env = os.environ.get("INSPECTKIT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inspectkit"


def default_threads() -> int:
    """CPU cores this process may run on (the container's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def verified_digest(path: str | Path, expected_sha256: str | None = None) -> str:
    """The checkpoint's SHA-256, checked against ``expected_sha256`` or else the ``<path>.sha256`` sidecar.

    Same rule as :func:`inspectkit.checkpoint.load_checkpoint`; a mismatch is a ValueError that names both digests.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    want, source = expected_sha256, "expected_sha256"
    sidecar = Path(str(path) + ".sha256")
    if want is None and sidecar.is_file():
        want, source = (sidecar.read_text().split() or [""])[0], str(sidecar)
    if want is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(want)):
        raise ValueError(f"{source} {want!r} is not a SHA-256 digest (64 hex digits)")
    got = sha256_file(path)
    if want is not None and got != want.lower():
        raise ValueError(f"checkpoint {path} has SHA-256 {got}, but {source} says {want}: the file was changed or "
                         "corrupted; refusing to load it")
    return got


def exact_layer(arch: str) -> str:
    """The layer at which this fast path's heat map is exact Grad-CAM."""
    if arch not in EXACT_LAYERS:
        raise ValueError(f"no fast path for arch {arch!r}; supported: {sorted(EXACT_LAYERS)}")
    return EXACT_LAYERS[arch]


@dataclass
class FastModel:
    """An ONNX Runtime session plus what inference needs from the checkpoint."""

    session: object
    meta: dict
    head_weight: np.ndarray  # C x K
    head_bias: np.ndarray  # C
    onnx_path: Path
    digest: str
    input_name: str = "input"
    timings: dict = field(default_factory=dict)
    _single: object = field(default=None, repr=False)
    _single_lock: object = field(default_factory=threading.Lock, repr=False)

    def run(self, batch: np.ndarray, features: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits B x C, last-block features B x K x h x w or None) for a float32 B x 3 x S x S batch.

        ONNX Runtime sessions may be run from several threads at once.
        """
        if features:
            logits, feats = self.session.run(["logits", "features"], {self.input_name: batch})
            return logits, feats
        (logits,) = self.session.run(["logits"], {self.input_name: batch})
        return logits, None

    def run_single_thread(self, batch: np.ndarray, features: bool = True):
        """As :meth:`run`, on a second session with one intra-op thread (created on first use).

        For big batches split across cores: one single-threaded run per core, each fed by its own worker's
        decoding and preprocessing, keeps every core busy without the barriers of intra-op parallelism.
        """
        if self._single is None:
            with self._single_lock:
                if self._single is None:
                    self._single = make_session(self.onnx_path, threads=1)
        names = ["logits", "features"] if features else ["logits"]
        out = self._single.run(names, {self.input_name: batch})
        return out[0], (out[1] if features else None)


def entry_dir(cache_dir: str | Path | None, digest: str) -> Path:
    """Cache folder of one checkpoint: keyed by its SHA-256, so a changed .pt never meets a stale graph."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / digest


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # readers see the old file or the whole new one, never half of it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(o):
    return o.item() if hasattr(o, "item") else str(o)


def export(checkpoint_path: str | Path, digest: str, cache_dir: str | Path | None = None,
           opset: int = 17) -> Path:
    """Generate the ONNX graph and the metadata for the checkpoint; returns the cache folder.

    The graph is checked against PyTorch on a random batch and a flat grey batch; a difference above
    EXPORT_TOLERANCE in logits or features is a RuntimeError and nothing is cached.
    """
    import torch

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .model import split_at

    t0 = time.perf_counter()
    ckpt = load_checkpoint(checkpoint_path, expected_sha256=digest)
    arch = ckpt["arch"]
    model = model_from_checkpoint(ckpt)
    for p in model.parameters():
        p.requires_grad_(False)
    body, head = split_at(model, arch, 0)  # body: all blocks; head: global pooling, flatten, classifier

    class WithFeatures(torch.nn.Module):
        """Logits and the last block's feature maps from one forward pass."""

        def __init__(self):
            super().__init__()
            self.body, self.head = body, head

        def forward(self, x):
            f = self.body(x)
            return self.head(f), f

    net = WithFeatures().eval()
    size = int(ckpt["preprocessing"]["size"])
    out = entry_dir(cache_dir, digest)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    fd, tmp = tempfile.mkstemp(prefix="model.", suffix=".onnx.tmp", dir=out)
    os.close(fd)
    example = torch.zeros(2, 3, size, size)
    exporter = "torchscript"
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # The TorchScript exporter: 3 s here against 13 s for the dynamo one, same graph
                torch.onnx.export(net, (example,), tmp, input_names=["input"], output_names=["logits", "features"],
                                  dynamic_axes={k: {0: "batch"} for k in ("input", "logits", "features")},
                                  opset_version=opset, do_constant_folding=True, dynamo=False)
        except Exception as exc:  # removed or broken in a future torch: the dynamo exporter does the same job
            log.info("TorchScript ONNX export failed (%s); using the dynamo exporter", exc)
            exporter = "dynamo"
            batch = torch.export.Dim("batch", min=1, max=4096)
            prog = torch.onnx.export(net, (example,), input_names=["input"], output_names=["logits", "features"],
                                     dynamic_shapes={"x": {0: batch}}, opset_version=max(opset, 18), dynamo=True,
                                     external_data=False)
            prog.save(tmp)
        export_s = time.perf_counter() - t0

        # Check the generated graph against PyTorch before anything trusts it.
        gen = torch.Generator().manual_seed(0)
        checks = [torch.randn(3, 3, size, size, generator=gen), torch.full((1, 3, size, size), 0.25)]
        session = make_session(tmp, threads=default_threads())
        worst_logit = worst_feat = 0.0
        for x in checks:
            with torch.no_grad():
                ref_logits, ref_feats = net(x)
            logits, feats = session.run(["logits", "features"], {"input": x.numpy()})
            worst_logit = max(worst_logit, float(np.abs(logits - ref_logits.numpy()).max()))
            worst_feat = max(worst_feat, float(np.abs(feats - ref_feats.numpy()).max()))
        if not (worst_logit <= EXPORT_TOLERANCE and worst_feat <= EXPORT_TOLERANCE):
            raise RuntimeError(f"the exported ONNX graph differs from PyTorch: logits by {worst_logit:.3g}, "
                               f"features by {worst_feat:.3g} (tolerance {EXPORT_TOLERANCE})")
        os.replace(tmp, onnx_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

    import onnx
    import onnxruntime
    import torchvision

    lin = head[-1][-1] if isinstance(head[-1], torch.nn.Sequential) else head[-1]
    buf = _npz_bytes(weight=lin.weight.numpy().astype(np.float32), bias=lin.bias.numpy().astype(np.float32))
    _atomic_write(out / "head.npz", buf)
    info = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta = {
        "cache_version": CACHE_VERSION,
        "sha256": digest,
        "checkpoint": str(Path(checkpoint_path).resolve()),
        "arch": arch,
        "cam_layer": exact_layer(arch),
        "info": info,
        "check": {"max_logit_diff": worst_logit, "max_feature_diff": worst_feat, "tolerance": EXPORT_TOLERANCE,
                  "inputs": int(sum(len(x) for x in checks))},
        "exporter": exporter,
        "export_seconds": round(time.perf_counter() - t0, 3),
        "export_only_seconds": round(export_s, 3),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # meta.json last: its presence means the entry is complete
    _atomic_write(out / "meta.json", json.dumps(meta, indent=1, default=_json_default).encode())
    log.info("exported %s to %s in %.1f s (logits within %.2g, features within %.2g of PyTorch)",
             checkpoint_path, onnx_path, meta["export_seconds"], worst_logit, worst_feat)
    return out


def _npz_bytes(**arrays) -> bytes:
    import io

    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


def make_session(onnx_path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation and ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads or default_threads())
    # one model, one request at a time per call: no use for parallel graph branches
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def load(checkpoint_path: str | Path, expected_sha256: str | None = None, cache_dir: str | Path | None = None,
         threads: int | None = None, digest: str | None = None, onnx_file: str | None = None) -> FastModel:
    """The fast model of a checkpoint: from the cache when present, else generated (needs torch) and cached.

    ``digest``: an already verified SHA-256 of the checkpoint (skips hashing again).
    ``onnx_file``: another graph in the same cache folder to run instead (e.g. ``model.int8.onnx``).
    """
    t0 = time.perf_counter()
    digest = digest or verified_digest(checkpoint_path, expected_sha256)
    t_hash = time.perf_counter()
    folder = entry_dir(cache_dir, digest)
    meta_path = folder / "meta.json"
    meta = None
    if meta_path.is_file() and (folder / "model.onnx").is_file() and (folder / "head.npz").is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("cache_version") != CACHE_VERSION or meta.get("sha256") != digest:
                meta = None
        except (OSError, ValueError):
            meta = None  # unreadable cache entry: generate it again
    generated = meta is None
    if generated:
        try:
            export(checkpoint_path, digest, cache_dir)
        except PermissionError:
            # a read-only cache folder (some hosted apps): generate into a private temporary one instead
            tmp_root = Path(tempfile.gettempdir()) / "inspectkit-cache"
            log.warning("cache folder %s is not writable; using %s", folder, tmp_root)
            folder = entry_dir(tmp_root, digest)
            export(checkpoint_path, digest, tmp_root)
        meta = json.loads((folder / "meta.json").read_text())
    t_meta = time.perf_counter()
    with np.load(folder / "head.npz") as z:
        weight, bias = z["weight"].astype(np.float32), z["bias"].astype(np.float32)
    onnx_path = folder / (onnx_file or "model.onnx")
    if not onnx_path.is_file():
        hint = " (make it with: python benchmarks/benchmark.py --int8)" if onnx_file == INT8_FILE else ""
        raise ValueError(f"no ONNX graph {onnx_path.name} in {folder}{hint}")
    session = make_session(onnx_path, threads)
    t_end = time.perf_counter()
    return FastModel(session=session, meta=meta, head_weight=weight, head_bias=bias, onnx_path=onnx_path,
                     digest=digest, input_name=session.get_inputs()[0].name,
                     timings={"hash_s": t_hash - t0, "generate_s": (t_meta - t_hash) if generated else 0.0,
                              "session_s": t_end - t_meta, "generated": generated})


def quantize_int8(checkpoint_path: str | Path, calibration: list[np.ndarray], cache_dir: str | Path | None = None,
                  batch_size: int = 16) -> Path:
    """Static INT8 quantisation (QDQ, per-channel weights) of the checkpoint's graph; returns its path.

    ``calibration``: preprocessed float32 3 x S x S inputs (a few hundred training images) from which
    activation ranges are measured. The INT8 graph sits beside the FP32 one (``model.int8.onnx``) and is only
    used when asked for (backend "onnx-int8"): its logits and heat maps are approximations, so its accuracy is
    reported next to FP32's by benchmarks/benchmark.py --int8 rather than assumed.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fm = load(checkpoint_path, cache_dir=cache_dir)
    folder = fm.onnx_path.parent
    if not calibration:
        raise ValueError("INT8 calibration needs at least one preprocessed image")
    batches = [np.stack(calibration[i:i + batch_size]).astype(np.float32)
               for i in range(0, len(calibration), batch_size)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {fm.input_name: b}

    pre = folder / "model.pre.onnx"
    out = folder / INT8_FILE
    fd, tmp = tempfile.mkstemp(prefix="model.int8.", suffix=".onnx.tmp", dir=folder)
    os.close(fd)
    try:
        quant_pre_process(str(fm.onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
        pre.unlink(missing_ok=True)
    return out
