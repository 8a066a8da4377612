"""Manifests of the held-out-class experiment (docs/finetune.md), from a synthetic V2S set.

    python split.py DATA CLASS FT_CLIPS TEST_CLIPS

DATA/manifest.jsonl -> DATA/heldout/
  base.jsonl       train-split clips in which CLASS is never heard (the base model's data)
  finetune.jsonl   the first FT_CLIPS train-split clips in which CLASS is heard (the adapter's data)
  test-class.jsonl val/test-split clips with CLASS (at most TEST_CLIPS): never seen by base or adapter
  test-other.jsonl val/test-split clips without CLASS (at most TEST_CLIPS): what the adapter must not break
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(data: str, cls: str, ft_clips: int, test_clips: int) -> None:
    root = Path(data)
    out = root / "heldout"
    out.mkdir(exist_ok=True)
    base, finetune, test_class, test_other = [], [], [], []
    for line in (root / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for key in ("video", "audio", "labels"):
            rec[key] = str((root / rec[key]).resolve())
        classes = json.loads(Path(rec["labels"]).read_text())["classes"]
        heard = cls in classes
        if rec["split"] == "train":
            (finetune if heard else base).append(rec)
        else:
            (test_class if heard else test_other).append(rec)
    sets = {"base": base, "finetune": finetune[:ft_clips], "test-class": test_class[:test_clips],
            "test-other": test_other[:test_clips]}
    for name, recs in sets.items():
        for rec in recs:
            rec["split"] = "train" if name in ("base", "finetune") else "test"
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        print(f"{out / name}.jsonl: {len(recs)} clips")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
