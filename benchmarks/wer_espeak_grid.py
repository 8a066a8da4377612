"""WER of espeak-read GRID sentences under the closed grammar: the `wer` metric's floor on clean speech.

24 sentences (`sentence(np.random.default_rng(0))`), sentence i read by synthetic speaker i % 12 at the
speaker's own rate (or `--rate`), each with half a second of silence on both sides; prints the mean WER and
the substitutions by grammar slot.

    python benchmarks/wer_espeak_grid.py [--rate 130] [--sentences 24] [--noise-snr-db none]

`--noise-snr-db`: the metric's noise floor below the speech level (default 30 dB, as the metric; `none`: off).
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from vssflow.plugins.datasets.synth.speech import GRAMMAR, sentence, speak, speakers
from vssflow.plugins.metrics.speech import normalise_text
from vssflow.registry import create

SLOTS = ("command", "colour", "preposition", "letter", "digit", "adverb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=None, help="words per minute for every speaker")
    parser.add_argument("--sentences", type=int, default=24)
    parser.add_argument("--noise-snr-db", default="30", help="the wer metric's noise floor in dB, or none")
    args = parser.parse_args()
    assert len(SLOTS) == len(GRAMMAR)
    rng = np.random.default_rng(0)
    sents = [sentence(rng) for _ in range(args.sentences)]
    voices = speakers()
    snr = None if args.noise_snr_db.lower() == "none" else float(args.noise_snr_db)
    wer = create("metric", "wer", grammar="grid", noise_snr_db=snr)
    scores, errors = [], Counter()
    pad = np.zeros(8000, np.float32)
    for i, words in enumerate(sents):
        wav, _ = speak(words, voices[i % len(voices)], 16000, args.rate)
        clip = torch.from_numpy(np.concatenate([pad, wav, pad]))
        scores.append(float(wer(clip[None], labels=[{"transcript": " ".join(words)}])[0]))
        hyp = normalise_text(wer.transcribe(clip)).split()
        for slot, ref_word, hyp_word in zip(SLOTS, words, hyp, strict=False):  # a short hypothesis: fewer
            if ref_word != hyp_word:
                errors[slot] += 1
    print(f"{len(sents)} sentences, rate {args.rate or 'per speaker'}, noise floor {snr} dB: WER {np.mean(scores):.3f} "
          f"(max {np.max(scores):.3f}); substitutions by slot: {dict(errors)}")


if __name__ == "__main__":
    main()
