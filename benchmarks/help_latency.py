"""`--help` must answer without importing torch: median wall time of each entry point's --help (target <= 0.5 s).

    python benchmarks/help_latency.py [--repeats 7]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "scripts/train.py --help": [sys.executable, str(REPO / "scripts/train.py"), "--help"],
    "scripts/evaluate.py --help": [sys.executable, str(REPO / "scripts/evaluate.py"), "--help"],
    "street-scene --help": [sys.executable, "-m", "src.cli.main", "--help"],
    "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
}
TARGET_S = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    worst = 0.0
    print(f"{'command':40s} {'median s':>9s} {'max s':>7s}")
    for label, argv in COMMANDS.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        if "floor" not in label:
            worst = max(worst, med)
        print(f"{label:40s} {med:9.3f} {max(times):7.3f}")
    print(f"slowest --help median {worst:.3f} s (target <= {TARGET_S} s): {'OK' if worst <= TARGET_S else 'FAIL'}")
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
