"""``dualoptim audit``: the unlearning audit (JSON + self-contained HTML) from checkpoint folders.

    dualoptim audit --original runs/fm/original --unlearned runs/fm/salun-1 --forget random:0.1 --seed 1 \\
        --retrain runs/fm/retrain-1 --json audit.json --html audit.html

All checkpoints are evaluated on the forget set drawn from the original model's training set (FA, UA, RA,
TA and both MIA variants, see ``dualoptim.vision.audit``), with the retrain-free verdict (docs/defaults.md):
held-out data the original never trained on define "never seen" (``--heldout``: the dataset's test split by
default, a FILE of images and labels such as a validation set, or ``none``: the verdict is then "unknown" for
sample-wise forgetting; the verdict names the held-out data it used). TA and the MIAs keep the test
split. Warnings that change what the numbers mean (a Retrain or unlearned checkpoint made
for another forget set or another original, a degenerate model) go into the JSON, the HTML and the output.
Method, optimizer, hyper-parameters, timings, calibration and the process curve come from the unlearned
checkpoint's ``metrics.json`` when ``dualoptim unlearn`` wrote one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runtime import add_runtime_args
from .cli import add_split_args, forget_file, stored_split
from .unlearn_cli import HELDOUT_HELP, heldout_data, heldout_file, verdict_outputs


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``audit`` to the ``dualoptim`` command."""
    p = sub.add_parser("audit", help="audit an unlearned checkpoint against the original (and Retrain)",
                       description="FA/UA/RA/TA and both MIA variants of the original, unlearned and (optional) "
                                   "Retrain checkpoints on one forget set; Gap to Retrain; JSON and HTML reports.")
    p.add_argument("--original", required=True, help="checkpoint folder of the original model")
    p.add_argument("--unlearned", required=True, help="checkpoint folder of the unlearned model")
    add_split_args(p, stored_in="the unlearned checkpoint")
    p.add_argument("--retrain", default=None, help="checkpoint folder of a Retrain model for this forget set")
    p.add_argument("--heldout", default="test", metavar="test|none|FILE", help=HELDOUT_HELP)
    p.add_argument("--json", default=None, metavar="FILE", help="write the audit as JSON")
    p.add_argument("--html", default=None, metavar="FILE", help="write the self-contained HTML report")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    add_runtime_args(p, progress=False, device=True)
    p.set_defaults(func=cmd_audit)


def _same_data(name: str, meta: Any, ref: Any) -> None:
    for key in ("dataset", "train_subset", "subset_seed", "num_classes"):
        if getattr(meta, key) != getattr(ref, key):
            raise ConfigError(f"--{name} checkpoint has {key}={getattr(meta, key)!r} but the original has "
                              f"{getattr(ref, key)!r}: it was not made from the same training set")


def cmd_audit(args: argparse.Namespace) -> int:
    from ..io import check_output
    from .audit import Audit, degenerate_warnings
    from .calibrate import attack_target, final_verdict
    from .checkpoint import dataset_for, load_classifier, weights_digest
    from .forget import make_forget_split
    from .metrics import compute_outputs, metrics_from_outputs

    warnings: list[str] = []  # every warning that changes what the numbers mean: JSON, HTML and stdout

    def warn(text: str) -> None:
        warnings.append(text)
        print(f"dualoptim: warning: {text}", file=sys.stderr)

    for flag, path in (("--json", args.json), ("--html", args.html)):  # before any work (issue 19)
        if path:
            check_output(path, inputs=(args.original, args.unlearned, args.retrain, args.data_dir,
                                       forget_file(args.forget), heldout_file(args.heldout)), kind="file", flag=flag)
    original, ometa, _ = load_classifier(args.original)
    unlearned, umeta, _ = load_classifier(args.unlearned)
    _same_data("unlearned", umeta, ometa)
    retrain = rmeta = None
    if args.retrain:
        retrain, rmeta, _ = load_classifier(args.retrain)
        _same_data("retrain", rmeta, ometa)
        if rmeta.role != "retrain":
            warn(f"{args.retrain} is a {rmeta.role!r} checkpoint, not a Retrain model")
    spec, seed = stored_split(args.unlearned, umeta, args.forget, args.seed)
    data = dataset_for(ometa, args.data_dir)
    heldout, heldout_name = heldout_data(args.heldout, data)
    split = make_forget_split(spec, data.train_y, seed)
    for name, meta in (("unlearned", umeta), ("retrain", rmeta)):
        have = (meta.split or {}).get("digest") if meta is not None else None
        if have is not None and have != split.digest:
            warn(f"the {name} checkpoint was made for forget set {meta.split.get('spec')} seed "
                 f"{meta.split.get('seed')}, but this audit uses {spec} seed {seed}: "
                 + ("its Gap is not a comparison with retraining without this forget set" if name == "retrain"
                    else "it did not unlearn this forget set"))
    odigest = weights_digest(original.state_dict())
    recorded = (umeta.original or {}).get("weights_sha256")
    if recorded is not None and recorded != odigest:
        warn(f"{args.unlearned} was unlearned from another original model (weights sha256 {recorded[:12]} != "
             f"{odigest[:12]}): the Original row is not what it started from")

    start = time.perf_counter()
    kw = dict(mia_svc=args.mia_svc, seed=seed)
    outs = {name: compute_outputs(m, data, split) for name, m in (("original", original), ("unlearned", unlearned),
                                                                   ("retrain", retrain)) if m is not None}
    results = {name: metrics_from_outputs(o, data, split, **kw) for name, o in outs.items()}
    info: dict[str, Any] = {}
    metrics_file = Path(args.unlearned) / "metrics.json"
    if metrics_file.is_file():
        try:
            info = json.loads(metrics_file.read_text())
        except json.JSONDecodeError:
            print(f"dualoptim: warning: {metrics_file} is not valid JSON; settings left out", file=sys.stderr)
    # the target of the rule the run was calibrated with (rules v5 and v6 add the Gap's membership attack)
    attack = attack_target(info.get("calibration", {}))
    verdict, details = final_verdict(verdict_outputs(original, data, split, heldout, outs["original"]),
                                     verdict_outputs(unlearned, data, split, heldout, outs["unlearned"]), heldout_name,
                                     mia=attack)
    for name, m in (("original", original), ("unlearned", unlearned), ("Retrain", retrain)):
        if m is not None:
            for w in degenerate_warnings(name, results[name.lower()], data.num_classes, m):
                warn(w)
    config = info.get("config", {})
    timings = {k: v if isinstance(v, int) else float(v) for k, v in (umeta.timings or {}).items()
               if isinstance(v, (int, float))}  # counts (unlearn_steps) stay integers
    timings["audit_eval_s"] = time.perf_counter() - start
    if rmeta is not None and "train_s" in (rmeta.timings or {}):
        timings["retrain_s"] = float(rmeta.timings["train_s"])
    audit = Audit.build(
        method=config.get("method", "unknown"), optim=config.get("optim", "unknown"), hyperparameters=config,
        sizes={"forget": split.num_forget, "retain": split.num_retain, "test": len(data.test_y),
               "heldout": 0 if heldout is None else len(heldout[1])},
        original=results["original"], unlearned=results["unlearned"], retrain=results.get("retrain"),
        timings=timings, process=[r for r in info.get("evals", []) if "step" in r],
        source={"original": str(args.original), "original_weights_sha256": odigest, "unlearned": str(args.unlearned),
                "retrain": args.retrain, "dataset": ometa.dataset, "train_subset": ometa.train_subset,
                "model": ometa.model, "split": split.describe(), "heldout": args.heldout},
        verdict=verdict, verdict_details=details, calibration=info.get("calibration", {}), warnings=warnings)
    print(audit.summary())
    for path, write in ((args.json, audit.write_json), (args.html, audit.write_html)):
        if path:
            write(path)
            print(f"wrote {path}")
    return 0
