#!/usr/bin/env bash
# One trial of every method x {shared, DualOptim} on the offline default, from the CLI (docs/results.md,
# "Methods, one trial"). Usage: bash benchmarks/methods_one_trial.sh RUN_DIR [SEED]
# RUN_DIR/original is trained if missing (Fashion-MNIST 10k subset, cnn, 8 epochs: the model the presets were searched on);
# learning rates and budgets come from the fashion-mnist-quick preset. Existing outputs are reused.
set -euo pipefail
dir=${1:?usage: methods_one_trial.sh RUN_DIR [SEED]}
seed=${2:-0}
py="$(dirname "$0")/../.venv/bin/python"
do="$py -m dualoptim.cli"
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$dir"
[ -d "$dir/original" ] || $do train --dataset fashion-mnist --model cnn --width 32 --train-subset 10000 --epochs 8 \
    --no-progress --out "$dir/original"
[ -d "$dir/retrain-$seed" ] || $do retrain --original "$dir/original" --forget random:0.1 --seed "$seed" \
    --no-svc --no-progress --out "$dir/retrain-$seed"
[ -f "$dir/original-$seed.json" ] || $do eval --checkpoint "$dir/original" --forget random:0.1 --seed "$seed" \
    --no-svc --json "$dir/original-$seed.json" > /dev/null
for method in ft ga rl salun scrub sfron; do
  for mode in shared dual; do
    optim=$($py -c "from dualoptim.vision.methods import get_method_info as g; i=g('$method'); \
print(i.shared_optim if '$mode' == 'shared' else i.dual_optim)")
    out="$dir/$method-$mode-$seed"
    [ -d "$out" ] || $do unlearn --original "$dir/original" --forget random:0.1 --seed "$seed" --method "$method" \
        --optim "$optim" --no-svc --no-progress --out "$out" > /dev/null
  done
done
$py - "$dir" "$seed" <<'EOF'
import json, sys
from pathlib import Path
d, seed = Path(sys.argv[1]), sys.argv[2]
rows = [("Retrain", "", json.loads((d / f"retrain-{seed}" / "meta.json").read_text())["metrics"], None),
        ("Original", "", json.loads((d / f"original-{seed}.json").read_text())["metrics"], None)]
for m in ("ft", "ga", "rl", "salun", "scrub", "sfron"):
    for mode in ("shared", "dual"):
        r = json.loads((d / f"{m}-{mode}-{seed}" / "metrics.json").read_text())
        c = r["config"]
        rows.append((m.upper() if m in ("ft", "ga", "rl") else {"salun": "SalUn", "scrub": "SCRUB", "sfron": "SFRon"}[m],
                     f"{c['optim']} (lr_f {c['forget_lr']:g}, lr_r {c['retain_lr']:g})", r["metrics"], r["timings"]))
ref = rows[0][2]
print("| method | optimizer | FA | RA | TA | MIA | Gap | unlearn s |")
print("|---|---|---|---|---|---|---|---|")
for name, opt, m, t in rows:
    gap = sum(abs(m[k] - ref[k]) for k in ("FA", "RA", "TA", "MIA")) / 4
    secs = f"{t['unlearn_s'] + t['prepare_s']:.1f}" if t else ""
    print(f"| {name} | {opt} | {m['FA']:.2f} | {m['RA']:.2f} | {m['TA']:.2f} | {m['MIA']:.2f} | {gap:.2f} | {secs} |")
EOF
