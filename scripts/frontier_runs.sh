#!/usr/bin/env bash
# Fine-tune the shipped spike-driven SDiT at three firing-rate penalties, one after another, in the background:
#   mkdir -p runs && nohup setsid bash scripts/frontier_runs.sh > runs/frontier.log 2>&1 &
# Each run is resumable: a run directory that exists is continued (sdit train --resume), a finished one
# (summary.json, or a shipped checkpoint of step 3000) skipped. A parked run (scripts/park_run.py) that is not
# in runs/ is restored there first.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
mkdir -p runs
for lam in 0.1 0.3 1.0; do
  dir="runs/sdit-small-sd-rate$lam"
  park="parked/sdit-small-sd-rate$lam"
  shipped="checkpoints/sdit-small-sd-rate$lam-fmnist/provenance.json"
  [ -f "$dir/summary.json" ] && continue
  [ -f "$shipped" ] && grep -q '^  "steps": 3000,$' "$shipped" && continue  # finished and shipped
  if [ ! -d "$dir" ] && [ -f "$park/PARKED.json" ]; then
    .venv/bin/python scripts/park_run.py --restore "$park" "$dir"
  fi
  if [ -d "$dir" ]; then
    nice -n 19 .venv/bin/sdit train --resume "$dir" --no-progress >> "runs/frontier-$lam.log" 2>&1
  else
    nice -n 19 .venv/bin/sdit train --preset sdit-small-sd --dataset fashion-mnist --batch-size 64 --steps 3000 \
      --lr 0.0001 --warmup-steps 100 --ema-decay 0.9999 --seed 0 --log-every 25 --sample-every 1000 \
      --ckpt-every 250 --keep 2 --compile --rate-penalty "$lam" --init-from checkpoints/sdit-small-sd-fmnist \
      --no-progress --out "$dir" >> "runs/frontier-$lam.log" 2>&1
  fi
done
