#!/usr/bin/env python
"""Train a street-scene model: `python scripts/train.py --help`. Same as `street-scene train`."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from src.cli.main import script_main

    sys.exit(script_main("train", "scripts/train.py"))
