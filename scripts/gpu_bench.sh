#!/usr/bin/env bash
# GPU benchmark for a lent machine (device tool): the podscribe pipeline on the dev episode with
# tiny.en in fp16 on CUDA, against openai-whisper transcribe() on the same GPU, then the same
# pipeline on CPU for the WER comparison. Prints the transcription-stage RTFx and both WERs;
# everything also lands in $OUT (or gpu/out) as JSON.
#
# Prepare here (this machine), then carry the ignored gpu/ folder (~63 MiB, under the 64 MiB
# carry limit) with the run:
#   .venv/bin/python scripts/pack_checkpoint.py pack tiny.en gpu/tiny.en.pt.xz
#   mkdir -p gpu/dev-episode && cp ../shared/eval/dev-episode/{episode.mp3,reference.txt} gpu/dev-episode/
#   run(command="bash scripts/gpu_bench.sh", carry=["gpu"], timeout_s=480)
# The machine has no internet: a Python with torch + openai-whisper + this project's
# dependencies must be there already (.venv, or python3 on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
OUT=${OUT:-gpu/out}
mkdir -p "$OUT"
export PODSCRIBE_CACHE_DIR=${PODSCRIBE_CACHE_DIR:-$PWD/.podscribe/cache}
EPISODE=${EPISODE:-gpu/dev-episode/episode.mp3}
REFERENCE=${REFERENCE:-gpu/dev-episode/reference.txt}
[ -f "$EPISODE" ] || EPISODE=../shared/eval/dev-episode/episode.mp3
[ -f "$REFERENCE" ] || REFERENCE=../shared/eval/dev-episode/reference.txt

MODEL=tiny.en
if [ -f gpu/tiny.en.pt.xz ]; then
  MODEL="$PODSCRIBE_CACHE_DIR/tiny.en.pt"
  [ -f "$MODEL" ] || "$PY" scripts/pack_checkpoint.py unpack gpu/tiny.en.pt.xz "$MODEL"
fi

nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm --format=csv || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# A cold GPU idles at a low clock (../shared/eval/README.md): ramp it up before timing.
"$PY" - <<'EOF'
import time, torch
a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
t = time.time()
while time.time() - t < 8:
    a @ a
torch.cuda.synchronize()
print("warm-up done")
EOF

# GPU: baseline transcribe() and the pipeline, 3 interleaved repetitions, batch from free memory.
"$PY" -m pipeline.cli.app bench "$EPISODE" --reference "$REFERENCE" --model "$MODEL" \
  --device cuda --repeat 3 --no-deterministic-baseline --json | tee "$OUT/bench-gpu.log"
tail -n 1 "$OUT/bench-gpu.log" > "$OUT/bench-gpu.json"

# CPU, same weights and machine: the WER the GPU result is compared with.
"$PY" -m pipeline.cli.app transcribe "$EPISODE" --reference "$REFERENCE" --model "$MODEL" \
  --device cpu --audio-root "$OUT/audio" --transcripts-root "$OUT/transcripts" \
  --episode-id dev-cpu --json | tee "$OUT/transcribe-cpu.log"
tail -n 1 "$OUT/transcribe-cpu.log" > "$OUT/transcribe-cpu.json"

"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
gpu = json.load(open(f"{out}/bench-gpu.json"))
cpu = json.load(open(f"{out}/transcribe-cpu.json"))
print(f"GPU {gpu['machine']}")
print(f"transcription-stage RTFx (GPU, fp16, batch {gpu['batch_size']}): "
      f"{gpu['transcribe_stage_rtfx']}")
print(f"pipeline end-to-end RTFx {gpu['pipeline_rtfx']} vs transcribe() {gpu['baseline_rtfx']} "
      f"-> speedup {gpu['speedup']}")
print(f"WER GPU {gpu['pipeline_wer']:.4f}  CPU {cpu['wer']:.4f}  "
      f"delta {gpu['pipeline_wer'] - cpu['wer']:+.4f}")
EOF
