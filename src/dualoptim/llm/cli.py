"""``dualoptim llm ...``: make-data, prepare, unlearn, eval, bench.

Heavy imports (transformers, peft, ...) happen inside the command functions. The argparse
namespace becomes typed configs in exactly one place per command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from ..runtime import add_runtime_args

DATA = "runs/llm/data/synthetic"
CACHE = "runs/llm/models"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _prep_cfg(args: argparse.Namespace) -> Any:
    from .model import ModelConfig, TrainConfig
    from .prepare import PrepareConfig

    return PrepareConfig(
        data=args.data, cache=args.cache, vocab_size=args.vocab_size,
        model=ModelConfig(hidden=args.hidden, layers=args.layers, heads=args.heads, intermediate=args.intermediate),
        base=TrainConfig(epochs=args.base_epochs, lr=args.lr, batch_size=args.batch_size),
        finetune=TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size),
        forget_splits=tuple(args.splits.split(",")))


def cmd_make_data(args: argparse.Namespace) -> int:
    from ..io import check_output
    from .data import SynthConfig, generate, save_benchmark

    check_output(args.out, kind="root")  # writable before any work; split files are added, nothing deleted
    data = generate(SynthConfig(n_authors=args.authors, seed=args.seed))
    save_benchmark(data, args.out)
    sizes = data["meta"]["sizes"]
    print(f"wrote {len(sizes)} splits to {args.out}: " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    report = prepare(_prep_cfg(args), log=_log)
    print(json.dumps({"models": report["models"], "timings": report["timings"]}, indent=2, default=str))
    return 0


def _resolve_model(args: argparse.Namespace, which: str) -> str:
    """``--model`` if given, else the prepared model ``which`` (``full`` or ``retainXX``)."""
    if getattr(args, "model", None) and which == "full":
        return args.model
    from .prepare import model_paths

    cfg = _prep_cfg(args)
    return str(model_paths(cfg)[which])


def cmd_unlearn(args: argparse.Namespace) -> int:
    import torch

    from ..io import check_output
    from .data import RETAIN_OF, load_benchmark
    from .model import apply_lora, load_model, reference_model, resolve_device, save_model
    from .recipes import resolve
    from .trainer import QAData, UnlearnConfig, init_distributed, run_llm_unlearning

    out = check_output(args.out or f"runs/llm/unlearned/{args.split}-{args.method}-{args.scheme}-s{args.seed}",
                       inputs=(args.data, args.model), overwrite=True)  # before any work
    r = resolve(args.preset, vars(args))
    cfg = UnlearnConfig(method=args.method, scheme=args.scheme, optimizer=args.optimizer,
                        epochs=r["unlearn_epochs"], batch_size=r["global_batch"], grad_accum=r["grad_accum"],
                        forget_lr=r["forget_lr"], retain_lr=r["retain_lr"], c_f=args.c_f, c_r=args.c_r,
                        beta=args.beta, seed=args.seed, retain_every=r["retain_every"],
                        warmup_epochs=r["warmup_epochs"], schedule=r["schedule"])
    if args.fsdp and args.lora:
        raise ConfigError("--fsdp shards full-parameter training; LoRA trains a few adapters: run LoRA with "
                          "plain data parallelism (torchrun without --fsdp)")
    device = resolve_device(args.device)
    rank, world = init_distributed(device)
    if args.fsdp and not torch.distributed.is_initialized():
        from .parallel import init_single_process

        init_single_process(device)  # FSDP on one process (one GPU) still needs a process group
    data = load_benchmark(args.data, splits=(args.split, RETAIN_OF[args.split]), idk=args.idk)
    model, tok, template = load_model(_resolve_model(args, "full"), template=args.template or r["template"],
                                      dtype=r["dtype"], device=device, trust_remote_code=args.trust_remote_code)
    if args.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if args.lora:
        model = apply_lora(model, r=r["lora_r"], alpha=r["lora_alpha"], dropout=r["lora_dropout"],
                           target_modules=_lora_targets(args.lora_targets))
        if args.gradient_checkpointing:
            model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    needs_ref = any(loss.needs_ref for loss in cfg.losses.values())
    ref = reference_model(model) if needs_ref else None  # LoRA: the adapter-disabled base (no copy)
    if args.fsdp:
        from .parallel import shard_model

        if ref is not None:
            shard_model(ref)
        shard_model(model)
    forget = QAData(tok, data[args.split], data.get("idk"), template, seed=args.seed, max_len=r["max_length"])
    retain = QAData(tok, data[RETAIN_OF[args.split]], data.get("idk"), template, seed=args.seed + 1,
                    max_len=r["max_length"])
    res = run_llm_unlearning(model, forget, retain, cfg, ref_model=ref)
    state_dict = None
    if args.fsdp:
        from .parallel import full_state_dict

        state_dict = full_state_dict(model)  # a collective: every rank
    if rank == 0:
        if args.lora:
            model = model.merge_and_unload()
        meta = {"stage": "unlearned", "unlearn": res["config"], "world": world, "preset": args.preset,
                "device": str(device), "dtype": r["dtype"], "fsdp": bool(args.fsdp), "lora": bool(args.lora)}
        save_model(model, tok, out, template, meta, state_dict=state_dict)
        summary = {k: v for k, v in res.items() if k != "curve"}
        print(json.dumps({"saved": str(out), "device": str(device), "dtype": r["dtype"], **summary}, indent=2,
                         default=str))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def _lora_targets(spec: str) -> str | tuple[str, ...]:
    return spec if spec == "all-linear" else tuple(t.strip() for t in spec.split(",") if t.strip())


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import RETAIN_OF, load_benchmark
    from .evaluate import EvalConfig, evaluate, load_encoder
    from .model import load_model, resolve_device

    ecfg = EvalConfig(forget_split=args.split, max_new_tokens=args.max_new_tokens, encoder=args.encoder,
                      max_items=args.max_items)
    data = load_benchmark(args.data)
    enc = load_encoder(args.encoder)
    retain_tr = None
    retain_path = args.retain_model or (None if args.model else _resolve_model(args, RETAIN_OF[args.split]))
    device = resolve_device(args.device)
    opts = {"dtype": args.dtype, "device": device, "trust_remote_code": args.trust_remote_code}
    if retain_path:
        rm, rt, rtemp = load_model(retain_path, template=args.template, **opts)
        retain_tr = evaluate(rm, rt, rtemp, data, ecfg, enc)["forget_tr_raw"]
        del rm
    model, tok, template = load_model(args.model or _resolve_model(args, "full"), template=args.template, **opts)
    ev = evaluate(model, tok, template, data, ecfg, enc, retain_tr)
    print(json.dumps({"metrics": ev["metrics"], "note": ev["metric_note"]}, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_table, run_bench
    from .evaluate import EvalConfig

    overrides: dict[str, Any] = {}
    if args.seeds:
        overrides["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.methods:
        overrides["methods"] = tuple(args.methods.split(","))
    rows = run_bench(args.preset, _prep_cfg(args), db=args.db,
                     eval_cfg=EvalConfig(max_new_tokens=args.max_new_tokens, encoder=args.encoder,
                                         max_items=args.max_items), log=_log,
                     **overrides)
    print(format_table(rows).markdown(), end="")
    note = next((r["extra"].get("note") for r in rows if r["extra"].get("note")), "")
    print(f"\n{note}\nFQ_ks = KS-test p-value of forget truth ratios vs the retain model; unlearn s = wall time of"
          f" unlearning; opt. state MiB = optimizer state size (CPU has no peak-allocator counter)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    from .data import FORGET_SPLITS

    p.add_argument("--data", default=DATA, help=f"benchmark folder from make-data, or 'tofu' (default {DATA})")
    add_runtime_args(p, progress=False)  # --threads: applied by dualoptim.cli.main
    g = p.add_argument_group("prepared models (must match 'llm prepare')")
    g.add_argument("--cache", default=CACHE)
    g.add_argument("--splits", default=",".join(FORGET_SPLITS), help="forget splits with retain models")
    g.add_argument("--vocab-size", type=int, default=2048)
    g.add_argument("--hidden", type=int, default=256)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--intermediate", type=int, default=688)
    g.add_argument("--base-epochs", type=int, default=10)
    g.add_argument("--epochs", type=int, default=6, help="fine-tune epochs (full and retain models)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--batch-size", type=int, default=32)


def _hardware(p: argparse.ArgumentParser, dtype_default: str | None) -> None:
    """``--device``, ``--dtype`` (``None``: the recipe's) and ``--trust-remote-code``."""
    from .model import DTYPES

    p.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default=dtype_default, choices=tuple(DTYPES),
                   help=f"weights' dtype (default {dtype_default or 'fp32; paper presets bf16'})")
    p.add_argument("--trust-remote-code", action="store_true", help="run model code shipped with the checkpoint")


def register(subparsers: Any) -> None:
    """Add the ``llm`` command group."""
    from .bench import BENCH_PRESETS
    from .data import FORGET_SPLITS
    from .recipes import RECIPES

    llm = subparsers.add_parser("llm", help="TOFU-style LLM unlearning (make-data, prepare, unlearn, eval, bench)")
    sub = llm.add_subparsers(dest="llm_command", metavar="COMMAND", required=True)

    p = sub.add_parser("make-data", help="generate the synthetic fictitious-author benchmark")
    p.add_argument("--out", default=DATA)
    p.add_argument("--authors", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_data)

    p = sub.add_parser("prepare", help="train tokenizer, base, fine-tuned and retain models (cached)")
    _common(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("unlearn", help="unlearn a forget split (torchrun/accelerate launch for several processes)")
    _common(p)
    _hardware(p, None)
    p.add_argument("--model", help="model folder or HF name (default: the prepared fine-tuned model)")
    p.add_argument("--template", help="prompt template name (qa, llama2) if the model folder has none")
    p.add_argument("--idk", help="refusal pool file (TOFU's idontknow.jsonl; default: the one in --data)")
    p.add_argument("--preset", default="default", choices=tuple(RECIPES),
                   help="hyper-parameter recipe (not a benchmark preset); paper-*: the paper's recipe (bf16, max "
                        "length 500, lr 1e-5, 1 epoch warm-up + linear decay, 1 forget : 5 retain steps, batch 40); "
                        "explicit flags override it")
    p.add_argument("--method", default="me+gd", help="<forget>+<retain>: ga|npo|me|dpo|idk + gd|ap|kl")
    p.add_argument("--scheme", default="dual", choices=("joint", "alternate", "dual"))
    p.add_argument("--optim", "--optimizer", dest="optimizer", help="optimizer spec (default adamw; adamw+adamw for "
                   "dual); --optimizer is the old name")
    p.add_argument("--split", default="forget10", choices=FORGET_SPLITS)
    p.add_argument("--unlearn-epochs", type=int, help="passes over the forget set (default 5)")
    p.add_argument("--global-batch", type=int, help="examples per optimizer step, all processes (default 16)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per step and process (default 1)")
    p.add_argument("--forget-lr", type=float, help="default 1e-4 (paper presets 1e-5)")
    p.add_argument("--retain-lr", type=float, help="default: --forget-lr")
    p.add_argument("--retain-every", type=int, help="retain steps after each forget step (Algorithm 1's T_r with "
                                                    "T_f = 1; default 1, paper code 5)")
    p.add_argument("--warmup-epochs", type=float, help="linear lr warm-up in forget epochs (default 0, paper 1)")
    p.add_argument("--schedule", choices=("constant", "linear"), help="after warm-up (default constant, paper "
                                                                      "linear decay)")
    p.add_argument("--max-length", type=int, help="token limit per sequence (default 500)")
    p.add_argument("--c-f", type=float)
    p.add_argument("--c-r", type=float)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--lora-targets", default="all-linear", help="comma-separated module names, or all-linear "
                                                               "(every linear layer but the output head)")
    p.add_argument("--lora-r", type=int)
    p.add_argument("--lora-alpha", type=int)
    p.add_argument("--lora-dropout", type=float)
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    p.add_argument("--fsdp", action="store_true", help="shard parameters, gradients and both optimizer states "
                                                       "(FSDP2) over the processes (one process: one GPU)")
    p.add_argument("--out", help="where to save the unlearned model")
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("eval", help="evaluate a model (MC*/FE*/Avg*, KS forget quality)")
    _common(p)
    p.add_argument("--model", help="model folder (default: the prepared fine-tuned model)")
    p.add_argument("--retain-model", help="retain model for KS forget quality (default: the prepared one)")
    p.add_argument("--template")
    _hardware(p, "fp32")
    p.add_argument("--split", default="forget10", choices=FORGET_SPLITS)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--max-items", type=int, default=0)
    p.add_argument("--encoder", default="auto", help="auto | none | sentence-encoder folder")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="methods x schemes table (Table-4/5 style) into the results database")
    _common(p)
    p.add_argument("--preset", default="quick", choices=BENCH_PRESETS.names(), help="benchmark preset (default: quick)")
    p.add_argument("--seeds", help="comma-separated seeds (overrides the preset)")
    p.add_argument("--methods", help="comma-separated methods (overrides the preset), e.g. me+gd")
    p.add_argument("--db", default="runs/results.db")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--max-items", type=int, default=0, help="evaluate at most this many items per split (0 = all)")
    p.add_argument("--encoder", default="auto")
    p.set_defaults(func=cmd_bench)
