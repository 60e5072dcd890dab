"""``batch_inspect.py --engine ray``: the same rows as the local engine, computed by a Ray Data actor pool.

The driver lists the photos and resumes from the output exactly as the local engine does; then the paths still
to do become a dataset (``ray.data.from_items``), ``map_batches`` sends chunks of them to a pool of actors
(``compute=ray.data.ActorPoolStrategy(size=N)``), each holding one InferenceHandler that reads, decodes and
inspects its chunk (a broken photo is a row with its error, as locally), and the driver writes every finished chunk
to the output as it arrives, so an interruption loses nothing already computed.

The rows carry the guard's columns (``unusable_reason``, ``novelty``, ``image_stats``) as locally. The summary file
and its drift alarm are the driver's (``batch.Tally``): chunks may come back out of order, so the drift monitor is
fed a row once every row before it in the input is there, and at the end it has seen them all in input order,
exactly as the local engine's.

Where Ray runs:

* no ``RAY_ADDRESS``: a local Ray started here with ``ray.init(num_cpus=...)`` and usage statistics off
  (``RAY_USAGE_STATS_ENABLED=0``), shut down at the end;
* ``RAY_ADDRESS`` set (``ray://head:10001``, ``auto``, or ``ray job submit`` doing it for you): that cluster,
  with no change to the command. Outside a submitted job the repository is shipped to the workers as the
  job's ``working_dir`` (without .venv, .git, runs/ and the like); photos must then be readable from every node,
  e.g. ``s3://`` URIs (docs/batch.md).

The pool leaves CPUs for the rest of the dataset: by default ``CPUs // --ray-actor-cpus - 1`` actors (at least
one), so on two cores one actor with one CPU and one CPU for the input and output tasks; an actor pool that takes
every CPU can stall a dataset whose other operators then never get scheduled.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable

from inspectkit.batch.inputs import UsageError, is_uri
from inspectkit.batch.rows import REPO, Job, inspect_paths
from inspectkit.batch.writers import RowWriter, parquet_schema
from inspectkit.paths import PACKAGE

#: Left out of the working_dir shipped to a remote cluster: environments, history, data, outputs.
SHIP_EXCLUDES = [".venv", ".git", "runs", "test-artifacts", "**/__pycache__", "*.parquet", "*.csv", "*.jsonl",
                 "data", "shared"]


class RayInspector:
    """A pool actor: one InferenceHandler, called with a pyarrow batch of ``path`` and returning the rows."""

    def __init__(self, checkpoint: str, backend: str, threads: int, heatmaps: str | None, root: str,
                 threshold: float | None):
        from inspectkit.inference.handler import InferenceHandler

        self.handler = InferenceHandler(checkpoint, backend=backend, threads=threads)
        self.heatmaps, self.root, self.threshold = heatmaps, root, threshold

    def __call__(self, batch):
        """Rows (a pyarrow Table with the output schema) for a batch of paths."""
        import pyarrow as pa

        paths = [str(p) for p in batch.column("path").to_pylist()]
        rows = inspect_paths(self.handler, paths, self.heatmaps, self.root, self.threshold,
                             batch_size=min(32, max(1, len(paths))))
        return pa.Table.from_pylist(rows, schema=parquet_schema())


def _ship_code() -> bool:
    """Whether to send the repository to a remote cluster: not when this driver already runs inside a Ray job
    (``ray job submit --working-dir``), whose runtime environment every actor inherits."""
    return not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") and os.environ.get("INSPECT_RAY_SHIP_CODE", "1") != "0"


def start_ray(job: Job):
    """Connect to RAY_ADDRESS's cluster, or start a local Ray; returns the ray module (usage stats off)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray is imported: no usage report is sent
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install -r requirements-dev.txt (or 'ray[data]')") from None
    address = os.environ.get("RAY_ADDRESS")
    common = dict(logging_level=logging.WARNING, ignore_reinit_error=True, log_to_driver=True)
    if address:
        runtime_env = {"working_dir": str(REPO), "excludes": SHIP_EXCLUDES} if _ship_code() else None
        ray.init(address=address, runtime_env=runtime_env, **common)
    else:
        if job.ray_cpus is not None and job.ray_cpus < 2:
            raise UsageError(f"--ray-cpus {job.ray_cpus}: a local Ray needs at least 2 CPUs (one actor and one for "
                             "the dataset's other tasks)")
        from inspectkit.inference.fast import default_threads

        cpus = job.ray_cpus or max(2, default_threads())
        # the workers get this package the way Ray ships local code (installed or not): as a runtime py_module
        ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=256 * 2**20,
                 runtime_env={"py_modules": [str(PACKAGE)], "excludes": ["**/__pycache__"]}, **common)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines between the bar's updates
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the command's own tqdm bar counts the rows as they are written
    ctx.print_on_execution_start = False
    return ray


def pool_size(job: Job, cluster_cpus: float) -> int:
    """Actors in the pool: ``--ray-actors``, else one per ``--ray-actor-cpus`` CPUs, less one for the read and
    write tasks, at least one."""
    if job.ray_actors:
        return int(job.ray_actors)
    return max(1, int(cluster_cpus // max(job.ray_actor_cpus, 0.001)) - 1)


def _checkpoint_for_actors(job: Job, shipped: bool) -> str:
    """The checkpoint as the actors should name it: absolute on this machine; relative to the repository when the
    repository is shipped as the working_dir (the handler looks up relative paths beside inference_handler.py)."""
    from inspectkit.inference.handler import InferenceHandler

    try:
        path = InferenceHandler._resolve(job.checkpoint)
    except ValueError as exc:
        raise UsageError(f"--checkpoint {job.checkpoint!r}: {exc}") from None
    path = path.resolve()
    if shipped:
        try:
            return str(path.relative_to(REPO))
        except ValueError:
            pass  # outside the repository: it must be at this path on every node (docs/batch.md)
    return str(path)


def run_ray(job: Job, todo: list[str], root: str, writer: RowWriter, on_rows: Callable[[list[dict]], None]) -> None:
    """Inspect ``todo`` on Ray; every chunk's rows are written by this driver as soon as they arrive."""
    if job.heatmaps and os.environ.get("RAY_ADDRESS") and not is_uri(job.heatmaps):
        print("warning: --heatmaps is a local folder; on a multi-node cluster each node writes its overlays to its "
              "own disk (give an s3:// URI to collect them in one place)", file=sys.stderr)
    ray = start_ray(job)
    try:
        shipped = bool(os.environ.get("RAY_ADDRESS")) and _ship_code()
        checkpoint = _checkpoint_for_actors(job, shipped)
        size = pool_size(job, ray.cluster_resources().get("CPU", 1.0))
        threads = job.threads or max(1, int(job.ray_actor_cpus))
        blocks = max(1, math.ceil(len(todo) / job.chunk_size))
        ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=blocks)
        ds = ds.map_batches(
            RayInspector,
            fn_constructor_kwargs=dict(checkpoint=checkpoint, backend=job.backend, threads=threads,
                                       heatmaps=job.heatmaps, root=root, threshold=job.threshold),
            batch_size=job.chunk_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=size), num_cpus=job.ray_actor_cpus)
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = table.to_pylist()
            writer.write(rows)
            on_rows(rows)
    finally:
        ray.shutdown()
