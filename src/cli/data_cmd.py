"""`street-scene data fingerprint DIR`: print a dataset split's content fingerprint."""

import argparse
import json
from pathlib import Path

HELP = "dataset tools (fingerprint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    fp = sub.add_parser("fingerprint", help="content fingerprint of a dataset folder or .txt image list",
                        description="File count, total bytes and a sha256 over (relative path, content sha256) of "
                                    "every image, label and mask file; *.cache and hidden files are skipped.")
    fp.add_argument("path", metavar="DIR", type=Path,
                    help="what you pass as --train-data/--val-data/--test-data: a split folder (images/ + labels/ "
                         "or masks/), an .../images/<split> folder or a .txt image list")
    names = fp.add_mutually_exclusive_group()
    names.add_argument("--names", nargs="+", metavar="NAME", help="class names to record in the fingerprint")
    names.add_argument("--data-yaml", metavar="YAML", help="take the class names from this dataset yaml, as a run does")
    fp.add_argument("--json", action="store_true", help="print JSON instead of text")
    fp.add_argument("--no-cache", action="store_true", help="hash every file; do not read or write the hash cache")


def run(args: argparse.Namespace) -> int:
    from src.common.fingerprint import fingerprint_dataset, split_fingerprint_root

    names = args.names
    if args.data_yaml:
        from src.data.data_yaml import class_names

        names = class_names(args.data_yaml)
    root = split_fingerprint_root(args.path)  # the folder (or list) a run records for `--train-data PATH`
    result = fingerprint_dataset(root, names, use_cache=not args.no_cache)
    shown = {"path": str(root), **result}
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        for key, value in shown.items():
            print(f"{key}: {_human_bytes(value) if key == 'bytes' else value}")
    return 0


def _human_bytes(n: int) -> str:
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{n}" if unit == "B" else f"{n} ({size:.1f} {unit})"
