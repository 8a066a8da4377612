"""Data parallel on the cores of one CPU machine, without torchrun (`vssflow train --processes N`, the demo).

A small model on a CPU does not keep several intra-op threads busy: most of its operators are too small to
split well, so a second thread buys little (the demo's training step on two cores: 1.18x). One process per
core, each on its own share of the batch, their gradients averaged over a gloo process group, keeps both busy
(1.39x on the same two cores; docs/scale.md). The processes run the same code as under torchrun: each gets
RANK, LOCAL_RANK and WORLD_SIZE, and the trainer splits every batch between them, so the run follows the
trajectory of a one-process run up to floating-point rounding.

GPUs are torchrun's job (one process per GPU); this launcher is for CPUs only.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from vssflow.core.errors import RecipeError, VssflowError

log = logging.getLogger("vssflow.launch")

MAX_AUTO_PROCESSES = 4  # past a few ranks the per-rank batches get small and the averaging costs more than it saves


class ProcessFailed(VssflowError):
    """A launched process stopped with a user-facing error; the message is that process's own."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which a container or `taskset` narrows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def plan_processes(requested: int | str, micro_batch: int, cores: int | None = None) -> tuple[int, int]:
    """(processes, intra-op threads per process) for `--processes` on a CPU.

    "auto": as many processes as cores (at most MAX_AUTO_PROCESSES) that split the micro-batch evenly, and the
    cores left divided among them as threads. A number is taken as given; it must divide the micro-batch.
    """
    cores = cores or usable_cores()
    if requested == "auto":
        processes = max(n for n in range(1, min(cores, MAX_AUTO_PROCESSES) + 1) if micro_batch % n == 0)
    else:
        try:
            processes = int(requested)
        except (TypeError, ValueError):
            raise RecipeError(f"--processes {requested!r}: give a number of processes or 'auto'") from None
        if processes < 1:
            raise RecipeError(f"--processes {processes}: give at least 1 (or 'auto')")
        if micro_batch % processes:
            raise RecipeError(f"--processes {processes}: the micro-batch of {micro_batch} (train.batch_size / "
                              f"train.grad_accum) does not split evenly; choose a divisor of {micro_batch}")
    return processes, max(1, cores // processes)


def run_processes(fn: Callable[..., Any], args: tuple = (), kwargs: dict[str, Any] | None = None,
                  processes: int = 2, threads: int = 1) -> list[Any]:
    """Run `fn(*args, **kwargs)` in `processes` fresh local processes joined by a gloo group; each rank's result,
    in rank order.

    `fn` must be importable by name (the processes are spawned); results come back pickled through files of a
    private temporary folder, so they may be large. A user-facing error (VssflowError) in any process stops all
    of them and is raised here with that process's message; Ctrl-C stops all of them and raises
    KeyboardInterrupt here. A crash (a bug, or a process killed by the system) stops the others too.
    """
    import pickle

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="vssflow-launch-") as tmp:
        folder = Path(tmp)
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_CPP_LOG_LEVEL")}
        # the children read these when torch loads in them, before any of our code runs
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        # DDP with find_unused_parameters (a model whose conditions belong to some tasks only) warns from C++,
        # once per process, when its first steps happen to use every parameter: a known false positive that
        # would print a paragraph per process; errors still print
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
        try:
            context = mp.start_processes(
                _child, args=(fn, args, kwargs or {}, processes, threads, str(folder), logging.getLogger().level),
                nprocs=processes, join=False, start_method="spawn")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

        def outcome(rank: int) -> tuple:
            path = folder / f"rank{rank}.pickle"
            # written by our own child process into this private folder, never a user's file
            return pickle.loads(path.read_bytes()) if path.exists() else ("missing",)

        try:
            while not context.join():
                pass
        except KeyboardInterrupt:
            _stop(context)
            raise
        except mp.ProcessExitedException:
            _stop(context)
            reports = [outcome(rank) for rank in range(processes)]
            failed = [r for r in reports if r[0] == "error"]
            if failed:
                _, message, code = failed[0]  # the lowest rank's message
                error = ProcessFailed(message)
                error.exit_code = code
                raise error from None
            if any(r[0] == "interrupted" for r in reports):
                raise KeyboardInterrupt from None
            raise
        return [outcome(rank)[1] for rank in range(processes)]


def _stop(context: Any) -> None:
    for process in context.processes:
        if process.is_alive():
            process.terminate()
    for process in context.processes:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


def _child(rank: int, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], world: int, threads: int,
           folder: str, log_level: int) -> None:
    import pickle

    import torch
    import torch.distributed as dist

    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(threads)

    def report(*outcome: Any) -> None:
        path = Path(folder) / f"rank{rank}.pickle"
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(outcome))
        partial.replace(path)

    try:
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
        try:
            result = fn(*args, **kwargs)
        finally:
            dist.destroy_process_group()
    except VssflowError as exc:
        report("error", str(exc), exc.exit_code)
        sys.exit(1)
    except KeyboardInterrupt:
        report("interrupted")
        sys.exit(130)
    report("done", result)
