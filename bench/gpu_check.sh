#!/usr/bin/env bash
# GPU check (not part of CI): gpt2-small in bf16 with SDPA (flash) attention and torch.compile, trained
# plainly (trainer=gpu) and under FSDP2 (trainer=fsdp, 1 device), on one CUDA GPU. Prints tokens/s and MFU
# (6N + 12·L·d·T FLOPs per token against the card's bf16 peak, from Lightning's ThroughputMonitor).
# Target: MFU >= 45% on an H100 for gpt2-small at block 1024. Runs well inside 10 minutes.
# With 2 GPUs it also trains under tensor parallel (trainer=tp) and pipeline parallel (trainer=pp, 4
# microbatches, 1F1B), with 4 under 2D (trainer=fsdp_tp: FSDP 2 x TP 2), without compile (DTensor
# hooks), and runs `python -m bench.parallel --device cuda` (per-rank peak memory and step time against one GPU).
#   bash bench/gpu_check.sh            # STEPS=80 BATCH=16 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=${STEPS:-80}
BATCH=${BATCH:-16}
export WANDB_MODE=offline HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
$PY -c "import lightning_llm" 2>/dev/null || $PY -m pip install -q -e .
GPUS=$($PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU"
print(f"gpu: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}  torch {torch.__version__}  flash SDPA: "
      f"{torch.backends.cuda.flash_sdp_enabled()}", file=__import__("sys").stderr)
print(torch.cuda.device_count())
PY
)

train_and_report() {  # name, then train.py overrides
  local name=$1 out=logs/gpu_check/$1
  shift
  rm -rf "$out"
  $PY train.py experiment=gpt2_small data.batch_size=$BATCH trainer.max_steps=$STEPS trainer.val_check_interval=$STEPS \
    trainer.limit_val_batches=5 trainer.log_every_n_steps=5 'callbacks=[throughput,last_checkpoint]' \
    callbacks.throughput.window_size=10 validate_before_fit=false hydra.run.dir=$out "$@" > "$out.log" 2>&1 \
    || { tail -30 "$out.log"; exit 1; }
  $PY - "$out" "$name" <<'PY'
import csv, json, statistics, sys
out, name = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(f"{out}/csv/metrics.csv")))
tail = [r for r in rows if r.get("train/device/items_per_sec")][len(rows) // 4 :]  # after compile warm-up
tps = statistics.median(float(r["train/device/items_per_sec"]) for r in tail)
mfu = [float(r["train/device/mfu"]) for r in tail if r.get("train/device/mfu")]
res = json.load(open(f"{out}/results.json"))
print(f"{name:7s} tokens/s {tps:,.0f}  MFU {100 * statistics.median(mfu):.1f}%  " if mfu else f"{name} tokens/s {tps:,.0f}",
      f"val/loss {res['metrics']['val/loss']:.3f}  peak mem {res.get('peak_memory_gb', 'n/a')}")
PY
}

train_and_report gpu trainer=gpu trainer.devices=1 model.compile=true
train_and_report fsdp trainer=fsdp trainer.devices=1 model.compile=true
if [ "$GPUS" -ge 2 ]; then
  train_and_report tp trainer=tp trainer.devices=2 trainer.accelerator=gpu
  train_and_report pp trainer=pp trainer.devices=2 trainer.accelerator=gpu model.tie_embeddings=false trainer.microbatches=4
  LAYOUTS=one,tp,pp-1f1b,pp-gpipe; [ "$GPUS" -ge 4 ] && LAYOUTS=$LAYOUTS,2d
  $PY -m bench.parallel --device cuda --steps 10 --batch 16 --seq 1024 --layouts $LAYOUTS
fi
if [ "$GPUS" -ge 4 ]; then
  train_and_report fsdp_tp trainer=fsdp_tp trainer.devices=4 trainer.tensor_parallel_size=2 trainer.accelerator=gpu
fi
