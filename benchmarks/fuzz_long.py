"""Long fuzz run of the upload path: >= 10,000 hypothesis-generated uploads through the InferenceHandler.

    python -m benchmarks.fuzz_long --cases 10000 --json reports/reliability/fuzz.json
    python -m benchmarks.fuzz_long --cases 2000 --checkpoint path/to/model.pt --backend torch

Same strategies and the same contract as tests/app/test_fuzz.py (``check_prediction``): every case either returns a
complete, consistent result or raises ValueError with a message. Its verdict is OK or DEFECT by the threshold rule,
or, for a checkpoint with a guard, UNUSABLE with one of the guard's reasons (``check_verdict``); anything else is a
violation. Unlike the test, a violation does not stop the
run: it is recorded (exception type, message, traceback tail) and the input is saved under ``--crash-dir``
for replay, and the run goes on. The mix per case: mutated real files (JPEG/PNG/GIF/BMP/TIFF/WebP),
random bytes, forged PNG sizes, numpy arrays of any dtype/shape, PIL images of any mode, the same bytes as a
file path, and small batches through ``predict_batch(on_error="collect")``.

Exit status 1 when any case broke the contract.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="hypothesis examples (default 10,000)")
    ap.add_argument("--checkpoint", default=str(REPO / "final_best_model.pt"),
                    help="model to fuzz (default: the committed final_best_model.pt)")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    ap.add_argument("--json", type=Path, help="write the summary here")
    ap.add_argument("--crash-dir", type=Path, default=REPO / "artifacts" / "fuzz-crashes",
                    help="inputs that broke the contract are pickled here (default artifacts/fuzz-crashes)")
    ap.add_argument("--progress-every", type=int, default=1000)
    args = ap.parse_args(argv)

    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hyp_seed
    from hypothesis import strategies as st

    from inspectkit.inference.handler import InferenceHandler
    from tests import test_fuzz as F

    handler = InferenceHandler(args.checkpoint, backend=args.backend, threads=1)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-long-"))
    counts: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    failures: list[dict] = []
    signatures: Counter = Counter()
    t0 = time.monotonic()
    n = [0]

    case = st.one_of(
        st.tuples(st.just("mutated_file"), F.mutated_file()),
        st.tuples(st.just("mutated_file"), F.mutated_file()),  # twice: the most informative kind gets more cases
        st.tuples(st.just("random_bytes"), F.random_bytes()),
        st.tuples(st.just("forged_png"), F.forged_png()),
        st.tuples(st.just("array"), F.odd_array()),
        st.tuples(st.just("pil"), F.odd_pil()),
        st.tuples(st.just("path"), F.mutated_file()),
        st.tuples(st.just("batch"), st.lists(st.one_of(F.upload_bytes(), F.odd_array()), min_size=1, max_size=5)),
    )

    def record_failure(kind, value, exc):
        sig = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        signatures[sig] += 1
        if signatures[sig] > 3:  # keep the report short: three examples of each distinct failure
            return
        args.crash_dir.mkdir(parents=True, exist_ok=True)
        try:
            blob = pickle.dumps(value)
            name = f"{kind}-{hashlib.sha256(blob).hexdigest()[:12]}.pkl"
            (args.crash_dir / name).write_bytes(blob)
        except Exception:
            name = None
        failures.append({"kind": kind, "exception": sig, "saved": name,
                         "traceback": traceback.format_exception(exc)[-3:]})

    @settings(max_examples=args.cases, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(c=case)
    def run(c):
        kind, value = c
        n[0] += 1
        try:
            if kind == "batch":
                results = handler.predict_batch(value, on_error="collect", batch_size=4)
                assert len(results) == len(value)
                for r in results:
                    if r.error is None:
                        F.check_result(r, handler)
                    else:
                        assert r.verdict is None and r.error.strip()
                outcome = "batch"
            elif kind == "path":
                p = tmp / "upload.img"
                p.write_bytes(value)
                outcome = F.check_prediction(handler, p)
            else:
                outcome = F.check_prediction(handler, value)
        except Exception as exc:  # AssertionError (a broken result) or an exception other than ValueError
            outcome = "VIOLATION"
            record_failure(kind, value, exc)
        counts[outcome] += 1
        by_kind.setdefault(kind, Counter())[outcome] += 1
        if args.progress_every and n[0] % args.progress_every == 0:
            print(f"{n[0]:>7} cases  {dict(counts)}  {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    if args.seed is not None:
        run = hyp_seed(args.seed)(run)
    run()
    elapsed = time.monotonic() - t0
    summary = {
        "cases": n[0], "cases_requested": args.cases, "elapsed_s": round(elapsed, 1),
        "cases_per_s": round(n[0] / elapsed, 1) if elapsed else None,
        "outcomes": dict(counts), "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "violations": counts.get("VIOLATION", 0), "distinct_violations": dict(signatures),
        "failure_examples": failures[:20],
        "checkpoint": Path(args.checkpoint).name, "checkpoint_sha256": handler.sha256, "backend": handler.backend,
        "guard": "on" if handler.guard is not None else f"off: {handler.guard_off_reason}",
        "seed": args.seed, "seed_files": sorted(F.seed_files()),
        "contract": "predict() returns a complete consistent result (verdict OK/DEFECT by the threshold, or "
                    "UNUSABLE with a guard's reason) or raises ValueError with a message; "
                    "predict_batch(on_error='collect') never raises for bad images",
    }
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    os.environ.setdefault("FUZZ_PROFILE", "fuzz-long")
    raise SystemExit(main())
