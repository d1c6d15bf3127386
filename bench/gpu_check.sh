#!/usr/bin/env bash
# GPU check (not part of CI): gpt2-small in bf16 with SDPA (flash) attention and torch.compile, trained
# plainly (trainer=gpu) and under FSDP2 (trainer=fsdp, 1 device), on one CUDA GPU. Prints tokens/s and MFU
# (6N + 12·L·d·T FLOPs per token against the card's bf16 peak, from Lightning's ThroughputMonitor).
# Target: MFU >= 45% on an H100 for gpt2-small at block 1024. Runs well inside 10 minutes.
#   bash bench/gpu_check.sh            # STEPS=80 BATCH=16 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=${STEPS:-80}
BATCH=${BATCH:-16}
export WANDB_MODE=offline HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
$PY -c "import lightning_llm" 2>/dev/null || $PY -m pip install -q -e .
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU"
print(f"gpu: {torch.cuda.get_device_name(0)}  torch {torch.__version__}  flash SDPA: {torch.backends.cuda.flash_sdp_enabled()}")
PY
for trainer in gpu fsdp; do
  out=logs/gpu_check/$trainer
  rm -rf "$out"
  $PY train.py experiment=gpt2_small trainer=$trainer trainer.devices=1 model.compile=true \
    data.batch_size=$BATCH trainer.max_steps=$STEPS trainer.val_check_interval=$STEPS trainer.limit_val_batches=5 \
    trainer.log_every_n_steps=5 'callbacks=[throughput,last_checkpoint]' callbacks.throughput.window_size=10 \
    validate_before_fit=false hydra.run.dir=$out > "$out.log" 2>&1 || { tail -30 "$out.log"; exit 1; }
  $PY - "$out" "$trainer" <<'PY'
import csv, json, statistics, sys
out, trainer = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(f"{out}/csv/metrics.csv")))
tail = [r for r in rows if r.get("train/device/items_per_sec")][len(rows) // 4 :]  # after compile warm-up
tps = statistics.median(float(r["train/device/items_per_sec"]) for r in tail)
mfu = [float(r["train/device/mfu"]) for r in tail if r.get("train/device/mfu")]
res = json.load(open(f"{out}/results.json"))
print(f"{trainer:5s} tokens/s {tps:,.0f}  MFU {100 * statistics.median(mfu):.1f}%  " if mfu else f"{trainer} tokens/s {tps:,.0f}",
      f"val/loss {res['metrics']['val/loss']:.3f}  peak mem {res.get('peak_memory_gb', 'n/a')}")
PY
done
