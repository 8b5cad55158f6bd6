#!/usr/bin/env bash
# Every modality's GPU path as a user runs it (`--device cuda`), in one run of ~8 min: the device tool's one
# prepared script. Each step has its own time limit and a failing step does not stop the others.
#
#   bash benchmarks/gpu_check.sh                             # on a GPU machine
#   DEVICE=cpu BUDGET_S=150 bash benchmarks/gpu_check.sh     # the same steps on the CPU (a check of the script)
#   ONLY='smoke-cuda|calibrated|audit|gen-.*-unet' bash benchmarks/gpu_check.sh   # a subset (regex of step names)
#
# 1. vision `bench --preset smoke` on the CPU and on $DEVICE: the tables side by side (GPU kernels are not
#    bit-identical to the CPU's; the rows should agree to within the trials' spread).
# 2. vision: a memorizing digits cnn trained on $DEVICE, `dualoptim unlearn` with no learning rate (calibrated,
#    rule v6) on the CPU and on $DEVICE, `audit` of the GPU run, and an explicit-lr bf16 + channels_last run.
# 3. generation: a tiny DDPM (U-Net and DiT) trained, unlearned (SalUn, DualOptim) and evaluated on $DEVICE.
# 4. llm: benchmarks/gpu_llm_fsdp.py (a random-init 1.1B Llama loaded in bf16 on the GPU, FSDP2 on one
#    process, ME+GD shared vs DualOptim vs lean: step time, tokens/s, peak memory).
# 5. the tests that take another branch when CUDA is there (tests/test_runtime.py, tests/test_llm_real.py).
# 6. vision `bench --preset quick` (the README's main job; 8.8 min on 2 CPU cores) on $DEVICE, timed, for what
#    is left of $BUDGET_S (rows are stored as they finish: a partial run still says how long a row takes).
#
# Output: $OUT/log.txt (everything printed), $OUT/times.txt (rc and seconds per step), $OUT/results.tgz
# (tables, JSON, HTML, databases; no weights).
set -uo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu_check}
BUDGET_S=${BUDGET_S:-480}
PY=${PY:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1  # DUALOPTIM_DATA_DIR passes through
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
R=$(mktemp -d)/gpu_check  # working folder (weights stay here)
mkdir -p "$R"
start=$(date +%s)
DO=("$PY" -m dualoptim.cli)  # the `dualoptim` command, installed or not
ONLY=${ONLY:-.}
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log output, record rc and seconds
  local name=$1 limit=$2; shift 2
  [[ $name =~ $ONLY ]] || return 0
  local t0; t0=$(date +%s)
  echo "=== $name (limit ${limit}s): $*" >>"$OUT/log.txt"
  timeout "$limit" "$@" >>"$OUT/log.txt" 2>&1
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$OUT/times.txt"
}
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }

step env 60 "$PY" -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda',
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'threads',
torch.get_num_threads()); import transformers, diffusers; print('transformers', transformers.__version__,
'diffusers', diffusers.__version__)"

# 1. smoke on the CPU and on the device
for dev in cpu "$DEVICE"; do
  step "smoke-$dev" 90 "${DO[@]}" bench --preset smoke --root "$R/smoke-$dev" --device "$dev" \
    --no-progress
done

# 2. calibrated unlearning (no learning rate), audit, bf16
step train-digits 60 "${DO[@]}" train --dataset digits --model cnn --epochs 40 --lr 0.1 --out "$R/digits-cnn" \
  --device "$DEVICE" --no-progress
for dev in cpu "$DEVICE"; do
  step "unlearn-calibrated-$dev" 60 "${DO[@]}" unlearn --original "$R/digits-cnn" --forget random:0.1 --seed 1 \
    --method salun --out "$R/salun-$dev" --device "$dev" --no-progress
done
step audit 60 "${DO[@]}" audit --original "$R/digits-cnn" --unlearned "$R/salun-$DEVICE" --json "$R/audit.json" \
  --html "$R/audit.html" --device "$DEVICE"
step unlearn-bf16 60 "${DO[@]}" unlearn --original "$R/digits-cnn" --forget random:0.1 --seed 1 --method sfron \
  --optim adam+sgd --forget-lr 1e-3 --bf16 --channels-last --out "$R/sfron-bf16" --device "$DEVICE" --no-progress

# 3. generation
for arch in unet dit; do
  gen=(--dataset digits --image-size 8 --channels 16,32 --attention none --arch "$arch" --steps 300
       --root "$R/gen-$arch" --device "$DEVICE" --no-progress)
  step "gen-train-$arch" 60 "${DO[@]}" gen train "${gen[@]}"
  step "gen-unlearn-$arch" 60 "${DO[@]}" gen unlearn "${gen[@]}" --forget-class 2 --method salun --optim adam+adam \
    --iterations 50 --out "$R/gen-$arch/u"
  step "gen-eval-$arch" 60 "${DO[@]}" gen eval "${gen[@]}" --checkpoint "$R/gen-$arch/u" --forget-class 2 \
    --json "$R/gen-$arch/eval.json"
done

# 4. llm at 1B scale (skipped on the CPU: use --size tiny there)
if [[ $DEVICE == cpu ]]; then llm=(--size tiny --device cpu); else llm=(); fi
step llm-fsdp 180 "$PY" benchmarks/gpu_llm_fsdp.py "${llm[@]}" --out "$R/gpu_llm_fsdp.json"

# 5. the CUDA branches of the tests
step tests-cuda 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_runtime.py tests/test_llm_real.py

# 6. the README's main job, for the time left
if (( $(left) > 45 )); then
  step quick "$(( $(left) - 15 ))" "${DO[@]}" bench --preset quick --root "$R/quick" --device "$DEVICE" --no-progress
  [[ -f $R/quick/results.db ]] && "$PY" -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print('quick rows stored:',
  c.execute('select count(*) from runs').fetchone()[0])" "$R/quick/results.db" >>"$OUT/times.txt" 2>&1
fi
(cd "$R" && find . -name '*.safetensors' -delete; find . -type d -name cache -prune -exec rm -rf {} +
 tar czf "$OUT/results.tgz" .) 2>>"$OUT/log.txt"
echo "total $(( $(date +%s) - start ))s" | tee -a "$OUT/times.txt"
