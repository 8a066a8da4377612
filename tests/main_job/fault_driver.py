"""Fault injection for checkpoint writes: `python fault_driver.py MODE OUT_ROOT SYNTH_ROOT [K ...]`.

Trains the micro recipe once uninterrupted (the reference), then for each file-system step k of the run's
checkpoint writes (every k when none are given) trains again in a forked child that dies at step k: MODE
`kill` ends it with os._exit(137) (as SIGKILL would: no clean-up runs), `interrupt` raises KeyboardInterrupt
(as Ctrl-C would). Then `--resume auto` runs to the end in another child, and the final model, EMA and
optimizer files must equal the reference byte for byte. Prints one JSON line: {"ops": N, "failures": [...]}.
It also checks, before each resume, that the newest complete checkpoint is the last one completed before the
fault: deterministic training would reach the reference weights even from step 0, hiding a lost checkpoint.
Forking after the imports keeps each trial to the training itself.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path

MICRO = Path(__file__).resolve().parent / "micro-v2s.yaml"
COMPARED = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "optimizer.json")


def overrides(synth: str) -> list[str]:
    return [
        "data.name=synthetic-av", f"data.params.root={synth}", "data.params.clips=8", "data.params.seconds=1.0",
        "data.params.families=[v2s]", "data.params.size=48", "data.params.split=all",
        "train.steps=2", "train.ckpt_every=1", "train.keep_last=1", "train.log_every=1",
    ]


CONTROL = {"count": 0, "k": None, "mode": "kill", "renamed": []}


def install() -> None:
    """Wrap every file-system step that changes a checkpoint folder (folder creation, tensor and JSON
    writes, renames, symlinks, deletions); before step CONTROL["k"], die (kill) or raise (interrupt)."""
    import vssflow.core.checkpoint as ck

    def wrap(owner: object, name: str) -> None:
        real = getattr(owner, name)

        def step(*args, **kwargs):
            CONTROL["count"] += 1
            if CONTROL["count"] == CONTROL["k"]:
                if CONTROL["mode"] == "kill":
                    os._exit(137)
                raise KeyboardInterrupt
            result = real(*args, **kwargs)
            if name == "replace" and Path(args[1]).name.startswith("step-"):
                CONTROL["renamed"].append((CONTROL["count"], int(Path(args[1]).name[5:])))  # a step folder is in
            return result

        setattr(owner, name, step)

    for owner, name in ((ck, "_save_tensors"), (ck, "_write_text"), (ck.os, "replace"), (ck.os, "symlink"),
                        (ck.shutil, "rmtree"), (ck.tempfile, "mkdtemp")):
        wrap(owner, name)


def train(out: Path, synth: str) -> None:
    from vssflow.training import train as run

    run(str(MICRO), out_dir=out, overrides=overrides(synth), resume="auto", progress=False)


def child(out: Path, synth: str, k: int | None) -> int:
    """Train in a forked child (the parent's imports are already warm); its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            CONTROL["count"], CONTROL["k"] = 0, k
            train(out, synth)
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    mode, root, synth = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    CONTROL["mode"] = mode
    install()
    reference = root / "reference"
    train(reference, synth)  # in this process: every lazy import happens once, before the forks
    ops = CONTROL["count"]
    renamed = list(CONTROL["renamed"])  # (op, step) at which each step folder was renamed into place
    ks = [int(a) for a in sys.argv[4:]] or list(range(1, ops + 1))
    failures = []
    last = reference / "checkpoints" / "last"
    expected = 137 if mode == "kill" else 130
    for k in ks:
        out = root / f"{mode}-{k}"
        code = child(out, synth, k)
        if code != expected:
            failures.append(f"k={k}: interrupted run exited {code}, expected {expected}")
            continue
        from vssflow.core.checkpoint import CheckpointFolder

        newest = CheckpointFolder(out / "checkpoints").newest()
        saved = max([step for op, step in renamed if op < k], default=None)
        have = int(newest.name[5:]) if newest is not None else None
        if have != saved:  # a completed checkpoint must never be lost (restarting from 0 would hide it)
            failures.append(f"k={k}: newest complete checkpoint is step {have}, expected {saved}")
        code = child(out, synth, None)
        if code != 0:
            failures.append(f"k={k}: resume exited {code}")
            continue
        got = out / "checkpoints" / "last"
        for name in COMPARED:
            if (got / name).read_bytes() != (last / name).read_bytes():
                failures.append(f"k={k}: {name} differs from the uninterrupted run")
        left = sorted(p.name for p in (out / "checkpoints").iterdir())
        if left != ["last", "step-000002"]:
            failures.append(f"k={k}: checkpoints/ holds {left}")
        shutil.rmtree(out)
    print(json.dumps({"ops": ops, "failures": failures}))


if __name__ == "__main__":
    main()
