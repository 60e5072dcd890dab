"""Does a change of code leave what users see alone? Every verdict, probability and heat map of the served model on
the casting test split and line B, written as one fingerprint per photo, then compared with an earlier run.

    python -m benchmarks.same_outputs --out runs/same/before.json          # before the change
    python -m benchmarks.same_outputs --out runs/same/after.json --compare runs/same/before.json

Per photo and backend (ONNX Runtime and torch): the verdict, the reason when UNUSABLE, every class probability
(exact float), the novelty, and SHA-256 digests of the heat map (float32) and of the overlay (uint8). ``--compare``
lists every photo whose record differs and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fingerprint(result) -> dict:
    """What a user sees of one result, exactly: floats as Python writes them, arrays as digests."""
    def digest(a):
        return None if a is None else hashlib.sha256(a.tobytes()).hexdigest()[:16]

    return {"verdict": result.verdict, "error": result.error, "unusable_reason": result.unusable_reason,
            "probabilities": {k: float(v) for k, v in result.probabilities.items()},
            "novelty": result.novelty, "needs_review": result.needs_review,
            "heatmap": digest(result.heatmap), "overlay": digest(result.overlay)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(REPO / "final_best_model.pt"))
    p.add_argument("--casting", default=str(REPO.parent / "shared" / "data" / "casting"))
    p.add_argument("--line-b", default=str(REPO.parent / "shared" / "data" / "casting-line-b"))
    p.add_argument("--backends", nargs="+", default=["onnx", "torch"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--compare", help="an earlier output: list the differences, exit 1 if any")
    p.add_argument("--report", help="with --compare: write the comparison's counts to this JSON")
    a = p.parse_args(argv)
    from inspectkit.inference.handler import InferenceHandler

    photos = sorted(Path(a.casting, "test").glob("*/*.jpeg")) + sorted(Path(a.line_b).glob("*/*.jpeg"))
    if not photos:
        raise SystemExit(f"same_outputs.py: error: no photos under {a.casting}/test or {a.line_b}")
    doc = {"checkpoint": a.checkpoint, "photos": len(photos), "backends": {}}
    t0 = time.perf_counter()
    for backend in a.backends:
        h = InferenceHandler(a.checkpoint, backend=backend, threads=a.threads)
        res = h.predict_batch([str(x) for x in photos], heatmap=True, on_error="collect")
        doc["backends"][backend] = {f"{x.parent.parent.name}/{x.parent.name}/{x.name}": fingerprint(r)
                                    for x, r in zip(photos, res)}
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1, sort_keys=True))
    print(f"{len(photos)} photos x {len(a.backends)} backends in {doc['seconds']} s -> {a.out}")
    if not a.compare:
        return 0
    before = json.loads(Path(a.compare).read_text())["backends"]
    diffs = [(b, k) for b in doc["backends"] for k, v in doc["backends"][b].items() if before.get(b, {}).get(k) != v]
    for b, k in diffs[:20]:
        print(f"differs ({b}): {k}: {before.get(b, {}).get(k)} -> {doc['backends'][b][k]}")
    print(f"{len(diffs)} of {len(photos) * len(doc['backends'])} records differ from {a.compare}")
    if a.report:
        verdicts = {b: {v: sum(1 for r in rs.values() if r["verdict"] == v) for v in ("OK", "DEFECT", "UNUSABLE")}
                    for b, rs in doc["backends"].items()}
        Path(a.report).write_text(json.dumps({
            "command": "python -m benchmarks.same_outputs " + " ".join(argv if argv is not None else sys.argv[1:]),
            "checkpoint_sha256": Path(str(a.checkpoint) + ".sha256").read_text().split()[0],
            "photos": len(photos), "backends": sorted(doc["backends"]),
            "records": len(photos) * len(doc["backends"]), "differ": len(diffs),
            "differing": [f"{b}: {k}" for b, k in diffs], "verdicts": verdicts}, indent=1) + "\n")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
