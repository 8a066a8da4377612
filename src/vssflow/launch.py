"""Data parallel on the cores of one CPU machine, without torchrun (`vssflow train --processes N`, the demo).

A small model on a CPU does not keep several intra-op threads busy: most of its operators are too small to
split well, so a second thread buys little (the demo's training step on two cores: 1.18x). One process per
core, each on its own share of the batch, their gradients averaged over a gloo process group, keeps both busy
(0.73x the time per step on the same two cores; docs/scale.md). The processes run the same code as under torchrun: each gets
RANK, LOCAL_RANK and WORLD_SIZE, and the trainer splits every batch between them, so the run follows the
trajectory of a one-process run up to floating-point rounding.

GPUs are torchrun's job (one process per GPU); this launcher is for CPUs only.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vssflow.core.errors import RecipeError, VssflowError

MAX_AUTO_PROCESSES = 4  # past a few ranks the per-rank batches get small and the averaging costs more than it saves


class ProcessFailed(VssflowError):
    """A launched process stopped with a user-facing error; the message is that process's own."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which a container or `taskset` narrows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def plan_processes(requested: int | str, micro_batch: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """(processes, intra-op threads per process) for `--processes` on a CPU.

    "auto": as many processes as cores (at most MAX_AUTO_PROCESSES), for training only counts that split the
    micro-batch evenly, and the cores left divided among them as threads. A number is taken as given; for
    training it must divide the micro-batch.
    """
    cores = cores or usable_cores()
    if requested == "auto":
        processes = max(n for n in range(1, min(cores, MAX_AUTO_PROCESSES) + 1)
                        if micro_batch is None or micro_batch % n == 0)
    else:
        try:
            processes = int(requested)
        except (TypeError, ValueError):
            raise RecipeError(f"--processes {requested!r}: give a number of processes or 'auto'") from None
        if processes < 1:
            raise RecipeError(f"--processes {processes}: give at least 1 (or 'auto')")
        if micro_batch is not None and micro_batch % processes:
            raise RecipeError(f"--processes {processes}: the micro-batch of {micro_batch} (train.batch_size / "
                              f"train.grad_accum) does not split evenly; choose a divisor of {micro_batch}")
    return processes, max(1, cores // processes)


def can_split(requested: int | str, device: str | None) -> bool:
    """Whether `--processes` may start several local processes here: False where "auto" means one process (a
    GPU, or under torchrun), True on a CPU; an explicit count where it cannot run is refused in one line."""
    import torch

    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    on_gpu = device.startswith("cuda") if device else torch.cuda.is_available()
    if requested == "auto" and (on_gpu or under_torchrun):
        return False
    if under_torchrun:
        raise RecipeError(f"--processes {requested}: this process was launched by torchrun already, which sets "
                          "the processes; drop --processes")
    if on_gpu:
        raise RecipeError(f"--processes {requested} runs on CPU cores; for GPUs launch one process per GPU "
                          "with torchrun (docs/scale.md), or pass --device cpu")
    return True


def run_processes(fn: Callable[..., Any], args: tuple = (), kwargs: dict[str, Any] | None = None,
                  processes: int = 2, threads: int = 1, after_crash: str = "") -> list[Any]:
    """Run `fn(*args, **kwargs)` in `processes` fresh local processes joined by a gloo group; each rank's result,
    in rank order.

    `fn` must be importable by name (the processes are spawned); results come back pickled through files of a
    private temporary folder, so they may be large. A user-facing error (VssflowError) in any process stops all
    of them and is raised here with that process's message; Ctrl-C stops all of them and raises
    KeyboardInterrupt here. A crash (a bug, or a process killed by the system) stops the others too; a killed
    process is reported in one line ending with `after_crash` (what the user can do next).
    """
    import multiprocessing
    import pickle
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="vssflow-launch-") as tmp:
        folder = Path(tmp)
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_CPP_LOG_LEVEL")}
        # the children read these when torch loads in them, before any of our code runs
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        # DDP with find_unused_parameters (a model whose conditions belong to some tasks only) warns from C++,
        # once per process, when its first steps happen to use every parameter: a known false positive that
        # would print a paragraph per process; errors still print
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
        workers = []
        try:
            for rank in range(processes):  # not daemonic: a process may start its own data-loading workers
                worker = ctx.Process(target=_child, name=f"vssflow-rank{rank}", args=(
                    rank, fn, args, kwargs or {}, processes, threads, str(folder), logging.getLogger().level))
                worker.start()
                workers.append(worker)
        except BaseException:
            _stop(workers)
            raise
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
            running = list(workers)
            while running:
                wait([w.sentinel for w in running])
                for worker in [w for w in running if w.exitcode is not None]:
                    running.remove(worker)
                    if worker.exitcode != 0:  # one stopped: the others would wait for it forever
                        _stop(workers)
                        running = []
        except KeyboardInterrupt:  # Ctrl-C reaches the whole terminal group: let them stop on their own first
            _stop(workers, grace=10.0)
            raise
        except BaseException:  # anything else here: no process is left behind
            _stop(workers)
            raise
        reports = [outcome(rank) for rank in range(processes)]
        if all(r[0] == "done" for r in reports):
            return [r[1] for r in reports]
        failed = [r for r in reports if r[0] == "error"]
        if failed:
            _, message, code = failed[0]  # the lowest rank's message
            error = ProcessFailed(message)
            error.exit_code = code
            raise error
        if any(r[0] == "interrupted" for r in reports):
            raise KeyboardInterrupt
        raise ProcessFailed(_stopped(workers) + (f"; {after_crash}" if after_crash else ""))


def _stopped(workers: list[Any]) -> str:
    """One line on the first process that stopped without a report (killed, out of memory, or a crash whose
    traceback it printed)."""
    import signal

    processes = len(workers)
    for rank, process in enumerate(workers):
        code = process.exitcode
        if code is None or code == 0 or code == -signal.SIGTERM:  # SIGTERM: stopped by us after another failed
            continue
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        hint = " (the system kills the largest process when memory runs out)" if code == -signal.SIGKILL else ""
        return f"process {rank} of {processes} {how}{hint}; the others were stopped"
    return f"one of the {processes} processes stopped without a report; the others were stopped"


def _stop(workers: list[Any], grace: float = 0.0) -> None:
    import time

    deadline = time.monotonic() + grace
    for process in workers:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in workers:
        if process.is_alive():
            process.terminate()
    for process in workers:
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
    _exit_with_parent()
    # progress bars guard their output with a thread lock here: tqdm's default is a multiprocessing lock, a named
    # semaphore that a process stopped by a signal cannot release, which the launcher's resource tracker would
    # then report as leaked
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
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


def _exit_with_parent() -> None:
    """Stop this process when the launching one dies (kill -9 of the launcher would otherwise leave it
    training on its own, holding the run folder)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="vssflow-parent-watch", daemon=True).start()
