"""Offline HTML reports: a metrics table (conditioned vs unconditioned), spectrogram pictures,
audio players and generated videos, all referenced by relative paths beside report.html."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def spectrogram_png(wav: np.ndarray, sample_rate: int, path: str | Path, n_mels: int = 64, hop: int = 160) -> Path:
    """Write a log-mel spectrogram picture of a mono waveform (S,) as PNG (low frequencies at the bottom)."""
    import torch
    import torchaudio
    from PIL import Image

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=hop, n_mels=n_mels, power=1.0)
    spec = torch.log(mel(torch.as_tensor(wav, dtype=torch.float32)).clamp_min(1e-5)).numpy()  # (M, F)
    lo, hi = np.percentile(spec, 2), spec.max()
    norm = np.clip((spec - lo) / max(hi - lo, 1e-6), 0, 1)[::-1]
    # a perceptually ordered dark-blue -> yellow ramp
    stops = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], dtype=np.float32)
    pos = norm * (len(stops) - 1)
    i = np.clip(pos.astype(int), 0, len(stops) - 2)
    frac = (pos - i)[..., None]
    rgb = (stops[i] * (1 - frac) + stops[i + 1] * frac).astype(np.uint8)
    image = Image.fromarray(rgb).resize((max(rgb.shape[1], 200), n_mels * 2), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path



def waveform_png(wav: np.ndarray, path: str | Path, width: int = 800, height: int = 120) -> Path:
    """Write a picture of a mono waveform (S,) as PNG: each column spans the samples' minimum to maximum,
    scaled to the clip's peak (a silent clip is a flat line)."""
    from PIL import Image

    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    width = max(1, min(width, wav.size))
    cols = np.array_split(wav, width) if wav.size else [np.zeros(1, np.float32)] * width
    lo = np.array([c.min() for c in cols])
    hi = np.array([c.max() for c in cols])
    peak = max(float(np.abs(wav).max()) if wav.size else 0.0, 1e-6)
    mid = (height - 1) / 2
    top = np.round(mid - hi / peak * mid).astype(int)
    bottom = np.round(mid - lo / peak * mid).astype(int)
    rows = np.arange(height)[:, None]
    rgb = np.full((height, width, 3), 255, dtype=np.uint8)
    rgb[int(round(mid))] = (200, 200, 200)
    rgb[(rows >= top[None]) & (rows <= bottom[None])] = (13, 8, 135)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path

@dataclass
class ClipEntry:
    """One clip of the report; paths are relative to the report's folder."""

    clip_id: str
    family: str
    caption: str = ""
    media: dict[str, str] = field(default_factory=dict)  # label -> path (.wav, .png, .mp4)
    scores: dict[str, float] = field(default_factory=dict)


def _media_html(label: str, rel: str) -> str:
    src = html.escape(rel)
    if rel.endswith(".png"):
        return f'<figure><img src="{src}" alt="{html.escape(label)}"><figcaption>{html.escape(label)}</figcaption></figure>'
    if rel.endswith(".wav"):
        return (f'<figure><audio controls preload="none" src="{src}"></audio>'
                f"<figcaption>{html.escape(label)}</figcaption></figure>")
    if rel.endswith(".mp4"):
        return (f'<figure><video controls preload="none" width="192" src="{src}"></video>'
                f"<figcaption>{html.escape(label)}</figcaption></figure>")
    return f'<a href="{src}">{html.escape(label)}</a>'


def write_report(
    out_dir: str | Path,
    title: str,
    summary: dict[str, Any],
    table: list[dict[str, Any]],
    clips: list[ClipEntry],
    notes: list[str] | None = None,
) -> Path:
    """Write report.html (and report.json with the same numbers) into `out_dir`; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(table[0]) if table else []
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row[c]))}</td>" for c in columns) + "</tr>" for row in table
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    summary_rows = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.items()
    )
    clip_blocks = []
    for clip in clips:
        scores = ", ".join(f"{k} {_fmt(v)}" for k, v in clip.scores.items())
        media = "\n".join(_media_html(label, rel) for label, rel in clip.media.items())
        clip_blocks.append(
            f'<section class="clip"><h3>{html.escape(clip.clip_id)} <small>{html.escape(clip.family)}</small></h3>'
            f"<p>{html.escape(clip.caption)}</p><p class=scores>{html.escape(scores)}</p>"
            f'<div class="media">{media}</div></section>'
        )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes or [])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
.media {{ display: flex; flex-wrap: wrap; gap: .8rem; align-items: flex-start; }}
figure {{ margin: 0; }} figcaption {{ font-size: .8rem; color: #555; }} img {{ display: block; }}
.clip {{ border-top: 1px solid #ddd; padding-top: .5rem; }} small {{ color: #777; font-weight: normal; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<table>{summary_rows}</table>
<h2>Metrics: conditioned vs. all conditions dropped</h2>
<table><tr>{head}</tr>
{rows}
</table>
<ul>{note_html}</ul>
<h2>Held-out clips</h2>
{"".join(clip_blocks)}
</body></html>
"""
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(page)
    tmp.replace(path)
    data = {"title": title, "summary": summary, "table": table,
            "clips": [c.__dict__ for c in clips], "notes": notes or []}
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str))
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
