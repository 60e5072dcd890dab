"""Write (or rewrite) the ONNX graph the app serves without torch, beside its checkpoint, bound to it.

    python export_onnx.py --checkpoint final_best_model.pt            # -> final_best_model.onnx (+ .onnx.sha256)
    python export_onnx.py --checkpoint final_best_model.pt --check    # is the committed graph the checkpoint's?

train.py and adapt.py (and any tool that rewrites a checkpoint that already has a graph) write it themselves; run
this for a checkpoint made before, or after replacing the checkpoint by hand. The graph returns logits and the
last block's feature maps (checked against PyTorch within 1e-3 before it is written); its ONNX metadata holds the
checkpoint's SHA-256 and weights digest and everything inference needs (classes, display names, preprocessing,
threshold, review band, heat-map scale, the linear head). Commit both files beside the checkpoint. Needs torch and
onnx: pip install -r requirements-train.txt (the --check runs with requirements.txt alone).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inspectkit.command import error


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 the graph does not match, 2 a usage problem)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="final_best_model.pt", help="the checkpoint (.pt) the graph is made from")
    p.add_argument("--out", default=None, help="where to write the graph (default: the checkpoint's path with .onnx)")
    p.add_argument("--check", action="store_true",
                   help="only check that the graph beside the checkpoint belongs to it (no torch needed)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from inspectkit.inference import fast

    ckpt = Path(a.checkpoint)
    try:
        digest = fast.verified_digest(ckpt)
    except ValueError as exc:
        error("export_onnx.py", str(exc))
        return 2
    graph = Path(a.out) if a.out else fast.graph_path(ckpt)
    if a.check:
        if not graph.is_file():
            print(f"export_onnx.py: no graph {graph}; write it with: {fast.export_command(ckpt)}", file=sys.stderr)
            return 1
        try:
            fm = fast.load_graph(graph, ckpt, digest, threads=1)
        except ValueError as exc:
            print(f"export_onnx.py: {exc}", file=sys.stderr)
            return 1
        print(f"{graph} belongs to {ckpt} (SHA-256 {digest}; weights {fm.meta.get('weights_sha256')})")
        return 0
    missing = fast.torch_missing("export_onnx.py (writing the graph)")
    if missing:
        error("export_onnx.py", f"{missing}")
        return 2
    try:
        out = fast.export_graph(ckpt, graph)
    except (ValueError, RuntimeError) as exc:
        error("export_onnx.py", str(exc))
        return 2
    meta = fast.graph_metadata(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out.name}.sha256 for {ckpt} (SHA-256 {digest}); "
          f"logits within {meta['check']['max_logit_diff']:.2g} and features within "
          f"{meta['check']['max_feature_diff']:.2g} of PyTorch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
