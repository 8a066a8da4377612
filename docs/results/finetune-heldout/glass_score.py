"""How much of CLASS the fitted judge hears in generated clips (beside the suite's class accuracy, which
accepts any class of a clip's labels as its top class, and most clips hold several classes).

    python glass_score.py JUDGE_DIR MANIFEST CLASS DIR [DIR ...]     (DIR: a folder of <id>.wav; "ref": the references)

Prints per folder: the judge's mean sigmoid probability of CLASS, and the fraction of clips whose top
class is CLASS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(judge_dir: str, manifest: str, cls: str, folders: list[str]) -> None:
    from vssflow.core.media import read_audio
    from vssflow.registry import create

    judge = create("judge", "logmel-cnn", path=judge_dir).eval()
    meta = json.loads((Path(judge_dir) / "judge.json").read_text())
    index, multilabel = meta["classes"].index(cls), bool(meta["multilabel"])
    recs = [json.loads(line) for line in Path(manifest).read_text().splitlines()]
    for folder in folders:
        wavs = [read_audio(r["audio"] if folder == "ref" else Path(folder) / f"{r['id']}.wav", 16000, mono=True)[0]
                for r in recs]
        n = max(w.shape[-1] for w in wavs)
        batch = torch.stack([torch.nn.functional.pad(w, (0, n - w.shape[-1])) for w in wavs])
        lengths = torch.tensor([w.shape[-1] for w in wavs])
        with torch.no_grad():
            logits = judge.classify(batch, lengths)
        prob = torch.sigmoid(logits[:, index]) if multilabel else logits.softmax(-1)[:, index]
        top = (logits.argmax(-1) == index).float()
        print(f"{folder}: mean p({cls}) {prob.mean():.3f}, top class {cls} {top.mean():.3f} (n={len(recs)})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
