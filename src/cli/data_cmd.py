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
    fp.add_argument("path", metavar="DIR", type=Path, help="split folder, dataset root or ultralytics .txt image list")
    fp.add_argument("--names", nargs="+", metavar="NAME", help="class names to record in the fingerprint")
    fp.add_argument("--json", action="store_true", help="print JSON instead of text")
    fp.add_argument("--no-cache", action="store_true", help="hash every file; do not read or write the hash cache")


def run(args: argparse.Namespace) -> int:
    from src.common.fingerprint import fingerprint_dataset

    result = fingerprint_dataset(args.path, args.names, use_cache=not args.no_cache)
    shown = {"path": str(args.path.expanduser().absolute()), **result}
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
