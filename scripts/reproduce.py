#!/usr/bin/env python
"""Re-train a past run and verify the result: `python scripts/reproduce.py --help`. Same as `street-scene reproduce`."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from src.cli.main import script_main

    sys.exit(script_main("reproduce", "scripts/reproduce.py"))
