"""The fast CPU path: an ONNX Runtime graph generated from the checkpoint, returning logits and last-block features.

The ``.pt`` checkpoint stays the single source of truth; its graph comes from one of two places, tried in order:

1. **The committed graph** beside it (``final_best_model.onnx`` for ``final_best_model.pt``: :func:`graph_path`),
   written by train.py / adapt.py / ``export_onnx.py`` (:func:`export_graph`). Everything inference needs without
   torch is in the graph's ONNX metadata (``metadata_props["inspectkit"]``, JSON): the checkpoint's SHA-256 and
   weights digest, classes, display names, preprocessing, threshold, review band, heat-map scale and the linear
   head. It is bound to the checkpoint: a graph recording another SHA-256 is refused (:class:`GraphMismatch`,
   naming both digests) and, where torch is installed, rebuilt in the cache instead. Its own ``.onnx.sha256``
   sidecar is checked when present. This is how the Space serves without torch (requirements.txt has none).
2. **The cache**: generated from the checkpoint on first use (needs torch), checked against PyTorch, and kept in
   ``<cache dir>/<sha256 of the .pt>/`` with ``meta.json`` (classes, threshold, preprocessing, metadata) and
   ``head.npz`` (the linear head). A cached load never imports torch either.

Why features as a second output: with global-average-pool + linear head, Grad-CAM at the last block equals
``ReLU(sum_k w_ck A_k)`` up to a positive factor (see :func:`inspectkit.heatmap.render.cam_from_features`), so one
forward pass gives the verdict and the heat map, with no backward pass.

Why one module of this length: export, binding (digests in the graph's metadata), loading and int8
quantisation must agree on one metadata format and one binding check; together, that format lives in one place.
"""

from __future__ import annotations

import base64
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

from inspectkit.digest import sha256_file

log = logging.getLogger(__name__)

#: Bump when the cached files change meaning; old cache entries are then regenerated.
CACHE_VERSION = 1
#: Largest difference between ONNX Runtime and PyTorch accepted when the graph is generated.
EXPORT_TOLERANCE = 1e-3
#: Layers at which the ONNX graph's features give the exact CAM (output -> global average pool -> linear).
EXACT_LAYERS = {"mobilenet_v2": "features.18", "resnet18": "layer4"}
#: The optional INT8 graph, beside the FP32 one in the cache entry.
INT8_FILE = "model.int8.onnx"
#: The committed graph's metadata: this key of the ONNX metadata_props holds a JSON object; bump GRAPH_FORMAT when
#: its meaning changes (an older graph is then refused with the export command).
GRAPH_META_KEY = "inspectkit"
GRAPH_FORMAT = 1
#: What to install for anything that needs torch (training, adaptation, exporting a graph, backend "torch").
TRAIN_INSTALL = "pip install -r requirements-train.txt"


class GraphMismatch(ValueError):
    """A committed ONNX graph that does not belong to its checkpoint (another SHA-256, or damaged)."""


def graph_path(checkpoint_path: str | Path) -> Path:
    """The committed graph of a checkpoint: the same path with the suffix ``.onnx``."""
    return Path(checkpoint_path).with_suffix(".onnx")


def torch_missing(what: str) -> str | None:
    """None when torch is installed, else the message for ``what`` (e.g. "train.py") that needs it, with the
    install command. Looks for torch without importing it, so building the UI stays fast."""
    import importlib.util

    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return (f"{what} needs torch, which is not installed: requirements.txt is the serving set (ONNX Runtime, no "
            f"torch). Install the training stack with: {TRAIN_INSTALL}")


def export_command(checkpoint_path: str | Path) -> str:
    """The command that (re)writes the committed graph of ``checkpoint_path``."""
    return f"python export_onnx.py --checkpoint {checkpoint_path}"


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

    Same rule as :func:`inspectkit.inference.checkpoint.load_checkpoint`; a mismatch is a ValueError that names both digests.
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


def _build(checkpoint_path: str | Path, digest: str, tmp: str, opset: int) -> dict:
    """Export the checkpoint's logits + last-block-features graph to ``tmp`` and check it against PyTorch.

    Returns what the cache entry and the committed graph record (info, head, check figures, versions). A difference
    above EXPORT_TOLERANCE in logits or features is a RuntimeError. Needs torch (ImportError without it).
    """
    import torch

    from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint, weights_digest
    from inspectkit.model import split_at

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
    example = torch.zeros(2, 3, size, size)
    exporter = "torchscript"
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

    import onnxruntime
    import torchvision

    try:
        import onnx
        onnx_version = onnx.__version__
    except ImportError:  # the TorchScript exporter does not need the onnx package; only the committed graph does
        onnx_version = None
    lin = head[-1][-1] if isinstance(head[-1], torch.nn.Sequential) else head[-1]
    info = {k: v for k, v in ckpt.items() if k not in ("state_dict", "guard")}
    if ckpt.get("guard") is not None:  # its arrays as base64 float32: JSON-ready, read back by inspectkit.guard
        from inspectkit.guard import encode

        info["guard"] = encode(ckpt["guard"])
    return {
        "arch": arch,
        "info": info,
        "weights_sha256": weights_digest(ckpt["state_dict"]),
        "weight": lin.weight.numpy().astype(np.float32), "bias": lin.bias.numpy().astype(np.float32),
        "check": {"max_logit_diff": worst_logit, "max_feature_diff": worst_feat, "tolerance": EXPORT_TOLERANCE,
                  "inputs": int(sum(len(x) for x in checks))},
        "exporter": exporter,
        "export_only_seconds": round(export_s, 3),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "onnx": onnx_version,
                     "onnxruntime": onnxruntime.__version__},
        "t0": t0,
    }


def export(checkpoint_path: str | Path, digest: str, cache_dir: str | Path | None = None,
           opset: int = 17) -> Path:
    """Generate the ONNX graph and the metadata for the checkpoint into the cache; returns the cache folder.

    The graph is checked against PyTorch on a random batch and a flat grey batch; a difference above
    EXPORT_TOLERANCE in logits or features is a RuntimeError and nothing is cached.
    """
    out = entry_dir(cache_dir, digest)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    fd, tmp = tempfile.mkstemp(prefix="model.", suffix=".onnx.tmp", dir=out)
    os.close(fd)
    try:
        built = _build(checkpoint_path, digest, tmp, opset)
        os.replace(tmp, onnx_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _atomic_write(out / "head.npz", _npz_bytes(weight=built["weight"], bias=built["bias"]))
    meta = {
        "cache_version": CACHE_VERSION,
        "sha256": digest,
        "checkpoint": str(Path(checkpoint_path).resolve()),
        "arch": built["arch"],
        "cam_layer": exact_layer(built["arch"]),
        "info": built["info"],
        "check": built["check"],
        "exporter": built["exporter"],
        "export_seconds": round(time.perf_counter() - built["t0"], 3),
        "export_only_seconds": built["export_only_seconds"],
        "versions": built["versions"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # meta.json last: its presence means the entry is complete
    _atomic_write(out / "meta.json", json.dumps(meta, indent=1, default=_json_default).encode())
    log.info("exported %s to %s in %.1f s (logits within %.2g, features within %.2g of PyTorch)",
             checkpoint_path, onnx_path, meta["export_seconds"], meta["check"]["max_logit_diff"],
             meta["check"]["max_feature_diff"])
    return out


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _from_b64(text: str, shape) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)
    return a.reshape([int(n) for n in shape])


def export_graph(checkpoint_path: str | Path, out: str | Path | None = None, opset: int = 17) -> Path:
    """Write the committed graph of a checkpoint (default :func:`graph_path`) and its ``.onnx.sha256``; returns it.

    The graph (logits and last-block features, checked against PyTorch as for the cache) carries in its ONNX
    metadata (``metadata_props["inspectkit"]``) everything the handler needs without torch: the checkpoint's
    SHA-256 and weights digest, arch, cam layer, the checkpoint's keys but the weights (classes, display names,
    preprocessing, threshold, review band, heat-map scale, metrics), and the linear head (base64 float32) for the
    heat maps. Written atomically. Needs torch and onnx (``pip install -r requirements-train.txt``).
    """
    import onnx

    checkpoint_path = Path(checkpoint_path)
    digest = verified_digest(checkpoint_path)
    out = Path(out) if out is not None else graph_path(checkpoint_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        built = _build(checkpoint_path, digest, tmp, opset)
        model = onnx.load(tmp)
        meta = {
            "format": GRAPH_FORMAT,
            "checkpoint_sha256": digest,
            "checkpoint": checkpoint_path.name,
            "weights_sha256": built["weights_sha256"],
            "arch": built["arch"],
            "cam_layer": exact_layer(built["arch"]),
            "info": built["info"],
            "head": {"weight": _b64(built["weight"]), "bias": _b64(built["bias"]),
                     "shape": list(built["weight"].shape)},
            "check": built["check"],
            "exporter": built["exporter"],
            "versions": built["versions"],
            # no time stamp: exporting the same checkpoint again gives the same bytes (no diff to commit)
        }
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = GRAPH_META_KEY, json.dumps(meta, default=_json_default)
        Path(tmp).write_bytes(model.SerializeToString())  # tmp is ours alone; the rename below publishes it
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the graph is shipped and read by other users
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sha = sha256_file(out)
    _atomic_write(Path(str(out) + ".sha256"), f"{sha}  {out.name}\n".encode())
    os.chmod(str(out) + ".sha256", 0o644)
    log.info("wrote %s (SHA-256 %s) for %s (SHA-256 %s); logits within %.2g, features within %.2g of PyTorch",
             out, sha, checkpoint_path, digest, built["check"]["max_logit_diff"], built["check"]["max_feature_diff"])
    return out


def save_with_graph(ckpt: dict, path: str | Path, graph: bool = False) -> str:
    """:func:`~inspectkit.inference.checkpoint.save_checkpoint`, then the ONNX graph beside it (``<stem>.onnx``):
    written when ``graph`` (training and adaptation ask for it), and rewritten whenever one is already there, so a
    checkpoint rewritten by evaluate, set-threshold, calibrate-heatmap or fit-guard keeps a graph that matches it
    (:func:`refresh_graph`; a failure there is logged with the command to run, not raised). Returns the digest."""
    from inspectkit.inference.checkpoint import save_checkpoint

    digest = save_checkpoint(ckpt, path)
    refresh_graph(path, always=graph)
    return digest


def refresh_graph(checkpoint_path: str | Path, always: bool = False) -> Path | None:
    """After a checkpoint was (re)written: (re)write its committed graph when ``always`` or when one exists beside it
    (a graph left behind would no longer match). A failure is logged with the command to run, not raised: the
    checkpoint itself is saved and stays usable (the handler then builds its graph in the cache)."""
    target = graph_path(checkpoint_path)
    if not (always or target.is_file()):
        return None
    try:
        return export_graph(checkpoint_path, target)
    except Exception as exc:
        log.warning("could not write the ONNX graph %s for %s (%s: %s); the Space cannot serve this checkpoint "
                    "without torch until it is written: %s", target, checkpoint_path, type(exc).__name__, exc,
                    export_command(checkpoint_path))
        return None


def graph_metadata(path: str | Path, session=None) -> dict:
    """The inspectkit metadata of a committed graph (ValueError when it has none or another format)."""
    if session is None:
        session = make_session(path, threads=1)
    raw = session.get_modelmeta().custom_metadata_map.get(GRAPH_META_KEY)
    if raw is None:
        raise GraphMismatch(f"{path} has no '{GRAPH_META_KEY}' metadata: it was not written by export_onnx.py; "
                            "write it with that command")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise GraphMismatch(f"{path}: its '{GRAPH_META_KEY}' metadata is not JSON ({exc})") from None
    if meta.get("format") != GRAPH_FORMAT:
        raise GraphMismatch(f"{path} has graph format {meta.get('format')!r}; this code reads {GRAPH_FORMAT}")
    return meta


def load_graph(graph: str | Path, checkpoint_path: str | Path, digest: str, threads: int | None = None) -> FastModel:
    """The fast model from a committed graph, refused unless it belongs to the checkpoint with SHA-256 ``digest``.

    Checks, each a :class:`GraphMismatch` (a ValueError) naming both digests: the graph's ``.sha256`` sidecar when
    present, then the checkpoint SHA-256 the graph records against ``digest``. Needs onnxruntime only.
    """
    t0 = time.perf_counter()
    graph = Path(graph)
    sidecar = Path(str(graph) + ".sha256")
    if sidecar.is_file():
        want = (sidecar.read_text().split() or [""])[0].lower()
        got = sha256_file(graph)
        if got != want:
            raise GraphMismatch(f"ONNX graph {graph} has SHA-256 {got}, but {sidecar.name} says {want}: the file was "
                                f"changed or damaged; refusing it. Write it again with: "
                                f"{export_command(checkpoint_path)}")
    session = make_session(graph, threads)
    meta = graph_metadata(graph, session)
    recorded = str(meta.get("checkpoint_sha256", "")).lower()
    if recorded != digest:
        raise GraphMismatch(f"ONNX graph {graph} was exported from a checkpoint with SHA-256 {recorded}, but "
                            f"{checkpoint_path} has SHA-256 {digest}: the graph belongs to another model; refusing "
                            f"it. Write it again with: {export_command(checkpoint_path)}")
    head = meta["head"]
    weight, bias = _from_b64(head["weight"], head["shape"]), _from_b64(head["bias"], [head["shape"][0]])
    fm_meta = {"cache_version": CACHE_VERSION, "sha256": digest, "checkpoint": str(checkpoint_path),
               "arch": meta["arch"], "cam_layer": meta["cam_layer"], "info": meta["info"], "check": meta["check"],
               "exporter": meta.get("exporter"), "versions": meta.get("versions"), "created": meta.get("created"),
               "weights_sha256": meta.get("weights_sha256"), "source": "committed", "graph": str(graph),
               "graph_sha256": None if not sidecar.is_file() else want}
    return FastModel(session=session, meta=fm_meta, head_weight=weight, head_bias=bias, onnx_path=graph,
                     digest=digest, input_name=session.get_inputs()[0].name,
                     timings={"hash_s": 0.0, "generate_s": 0.0, "session_s": time.perf_counter() - t0,
                              "generated": False, "source": "committed"})


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
    """The fast model of a checkpoint: its committed graph when one is beside it (see :func:`load_graph`), else
    from the cache, else generated (needs torch) and cached.

    A committed graph that does not match the checkpoint is refused: with torch installed the graph is then built
    in the cache instead (logged as a warning with the export command); without torch the :class:`GraphMismatch`
    is raised. No graph anywhere and no torch: a RuntimeError that says what to install or export.
    ``digest``: an already verified SHA-256 of the checkpoint (skips hashing again).
    ``onnx_file``: another graph in the checkpoint's cache folder to run instead (e.g. ``model.int8.onnx``).
    """
    t0 = time.perf_counter()
    digest = digest or verified_digest(checkpoint_path, expected_sha256)
    t_hash = time.perf_counter()
    committed = graph_path(checkpoint_path)
    refused: GraphMismatch | None = None
    if onnx_file is None and committed.is_file():
        try:
            fm = load_graph(committed, checkpoint_path, digest, threads)
            fm.timings["hash_s"] = t_hash - t0
            return fm
        except GraphMismatch as exc:
            refused = exc
            log.warning("%s", exc)
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
            try:
                export(checkpoint_path, digest, cache_dir)
            except PermissionError:
                # a read-only cache folder (some hosted apps): generate into a private temporary one instead
                tmp_root = Path(tempfile.gettempdir()) / "inspectkit-cache"
                log.warning("cache folder %s is not writable; using %s", folder, tmp_root)
                folder = entry_dir(tmp_root, digest)
                export(checkpoint_path, digest, tmp_root)
        except ImportError as exc:
            if exc.name not in ("torch", "torchvision"):
                raise  # onnxruntime or onnx missing: the handler's "auto" falls back to PyTorch
            # serving without torch (requirements.txt) can only run a committed graph
            if refused is not None:
                raise GraphMismatch(f"{refused} (or install torch to build one here: {TRAIN_INSTALL})") from None
            raise RuntimeError(
                f"no ONNX graph for {checkpoint_path}: none beside it ({committed.name}) and none in the cache, and "
                f"generating one needs torch, which is not installed ({exc}). Install it with: {TRAIN_INSTALL}; or "
                f"write the graph where torch is installed ({export_command(checkpoint_path)}) and put "
                f"{committed.name} beside the checkpoint") from None
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
                              "session_s": t_end - t_meta, "generated": generated, "source": "cache"})


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

    # the cache entry's graph (not a committed one): the INT8 graph is kept beside it, in the cache folder
    fm = load(checkpoint_path, cache_dir=cache_dir, onnx_file="model.onnx")
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
