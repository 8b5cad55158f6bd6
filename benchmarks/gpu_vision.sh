#!/usr/bin/env bash
# The vision path on a GPU, as a user runs it (`--device cuda`): correctness against the CPU, then time.
#
#   bash benchmarks/gpu_vision.sh            # on a GPU machine (device tool: one run, ~10 min)
#   DEVICE=cpu bash benchmarks/gpu_vision.sh # the same steps on the CPU (a check of the script itself)
#
# 1. `bench --preset smoke` on the CPU and on $DEVICE: the two tables side by side (GPU kernels are not
#    bit-identical to the CPU's; the rows should agree to within the trials' spread).
# 2. `bench --preset quick` on $DEVICE with its wall time (the README's main job: 7.5 min on 2 CPU cores).
# 3. `bench --preset offline-full` on $DEVICE for whatever time is left of $BUDGET_S: it stores each finished row
#    (resumable), so a partial run still says how long a row takes; its table and database go to $OUT.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu_vision}
BUDGET_S=${BUDGET_S:-540}
start=$(date +%s)
mkdir -p "$OUT"
run() { echo "+ $*" >&2; "$@"; }
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
for dev in cpu "$DEVICE"; do
  t0=$(date +%s)
  run dualoptim bench --preset smoke --root "$OUT/smoke-$dev" --device "$dev" --no-progress > "$OUT/smoke-$dev.txt"
  echo "smoke on $dev: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/times.txt"
done
t0=$(date +%s)
run dualoptim bench --preset quick --root "$OUT/quick" --device "$DEVICE" --no-progress > "$OUT/quick.txt"
echo "quick on $DEVICE: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/times.txt"
left=$(( BUDGET_S - ($(date +%s) - start) ))
if (( left > 60 )); then
  t0=$(date +%s)
  timeout "$left" dualoptim bench --preset offline-full --root "$OUT/full" --device "$DEVICE" --no-progress \
    > "$OUT/offline-full.txt" || echo "offline-full stopped after ${left} s (rows stored so far are in the db)"
  echo "offline-full on $DEVICE: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/times.txt"
fi
rm -rf "$OUT"/*/cache  # model weights: too large to bring back; the databases and tables stay
