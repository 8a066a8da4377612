#!/usr/bin/env bash
# The held-out-class experiment of docs/finetune.md: a v2s-demo base model that never heard CLASS, a LoRA
# adapter fine-tuned on a few dozen clips of it, evaluated before and after on unseen clips with and without it.
# Run from the repository root: bash docs/results/finetune-heldout/run.sh   (OUT=runs/heldout by default)
set -euo pipefail
CLASS=${CLASS:-glass}
DATA=${DATA:-data/heldout-synth}
OUT=${OUT:-runs/heldout}
BASE_STEPS=${BASE_STEPS:-600}
FT_STEPS=${FT_STEPS:-200}
FT_CLIPS=${FT_CLIPS:-32}
TEST_CLIPS=${TEST_CLIPS:-40}
HERE=docs/results/finetune-heldout

vssflow data synth --out "$DATA" --clips 1000 --seconds 4 --families v2s --seed 0 --no-progress
python "$HERE/split.py" "$DATA" "$CLASS" "$FT_CLIPS" "$TEST_CLIPS"
# the classifier judge: every class, fitted on the synthetic set's train split (reused by every evaluation)
python -c "from vssflow.evaluation import fit_judges; fit_judges('$DATA/manifest.jsonl', '$OUT/judge')"

vssflow train v2s-demo --out "$OUT/base" --resume auto --no-progress --set train.steps="$BASE_STEPS" \
    --set "data={name: manifest, params: {path: $DATA/heldout/base.jsonl, split: train}}"
vssflow train finetune/lora-v2s-demo --out "$OUT/lora" --resume auto --no-progress --set train.steps="$FT_STEPS" \
    --set train.init_from="$OUT/base/checkpoints/last" --set data.params.path="$DATA/heldout/finetune.jsonl"
vssflow adapter show "$OUT/lora/checkpoints/last"

METRICS="class-accuracy,fd[logmel-cnn],onset-f1"
for set in test-class test-other; do
    vssflow evaluate --checkpoint "$OUT/base/checkpoints/last" --manifest "$DATA/heldout/$set.jsonl" \
        --out "$OUT/eval-before-$set" --metrics "$METRICS" --fit-judges --judges-dir "$OUT/judge" --no-progress
    vssflow evaluate --checkpoint "$OUT/base/checkpoints/last" --adapter "$OUT/lora/checkpoints/last" \
        --manifest "$DATA/heldout/$set.jsonl" --out "$OUT/eval-after-$set" --metrics "$METRICS" \
        --fit-judges --judges-dir "$OUT/judge" --no-progress
done
for set in test-class test-other; do
    python "$HERE/glass_score.py" "$OUT/judge" "$DATA/heldout/$set.jsonl" "$CLASS" ref \
        "$OUT/eval-before-$set/generated" "$OUT/eval-after-$set/generated"
done
