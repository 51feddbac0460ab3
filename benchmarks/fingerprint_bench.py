"""Dataset fingerprint speed: cold (empty cache), warm (cache hit), and `sha256sum` over the same files.

    python benchmarks/fingerprint_bench.py [--images 1000] [--image-kb 200] [--repeat 3]

Builds a synthetic detection split (random-byte .jpg images + .txt labels) in a temp dir. Every figure is the
best of `--repeat` runs with the files in the page cache, so it measures hashing, not the disk (dropping the
page cache needs root). The files' mtimes are set 1 h back: files written in the last 2 s are deliberately
not cached (see `src/common/fingerprint.py`), and a real dataset is not that fresh.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.common.fingerprint import fingerprint_dataset  # noqa: E402


def build_dataset(root: Path, images: int, image_kb: int) -> int:
    old = time.time_ns() - 3600 * 10**9
    total = 0
    for sub in ("images/train", "labels/train"):
        (root / sub).mkdir(parents=True)
    for i in range(images):
        for path, data in ((root / "images/train" / f"{i:05d}.jpg", os.urandom(image_kb * 1024)),
                           (root / "labels/train" / f"{i:05d}.txt", b"0 0.5 0.5 0.25 0.25\n1 0.1 0.2 0.05 0.05\n")):
            path.write_bytes(data)
            os.utime(path, ns=(old, old))
            total += len(data)
    return total


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sha256sum(root: Path) -> None:
    find = subprocess.Popen(["find", str(root), "-type", "f", "-print0"], stdout=subprocess.PIPE)
    subprocess.run(["xargs", "-0", "sha256sum"], stdin=find.stdout, stdout=subprocess.DEVNULL, check=True)
    find.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images (each gets a label file)")
    parser.add_argument("--image-kb", type=int, default=200, help="size of each image in KiB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fingerprint_bench_"))
    try:
        data = tmp / "dataset"
        total = build_dataset(data, args.images, args.image_kb)
        mb = total / 1e6
        cache = tmp / "cache.json"

        def cold():
            cache.unlink(missing_ok=True)
            return fingerprint_dataset(data, cache_path=cache)

        sha256sum(data)  # warm the page cache for every contender alike
        t_sum = best_of(args.repeat, lambda: sha256sum(data))
        t_cold = best_of(args.repeat, cold)
        reference = cold()
        t_warm = best_of(args.repeat, lambda: fingerprint_dataset(data, cache_path=cache))
        assert fingerprint_dataset(data, cache_path=cache) == reference, "cached result differs from cold result"

        print(f"dataset: {2 * args.images} files, {mb:.1f} MB  ({os.cpu_count()} CPUs, best of {args.repeat})")
        print(f"sha256sum (find | xargs): {t_sum:7.3f} s  {mb / t_sum:8.1f} MB/s")
        print(f"fingerprint cold:         {t_cold:7.3f} s  {mb / t_cold:8.1f} MB/s  "
              f"({t_sum / t_cold:.2f}x the speed of sha256sum)")
        print(f"fingerprint warm (cache): {t_warm:7.3f} s  {mb / t_warm:8.1f} MB/s  "
              f"({t_cold / t_warm:.1f}x faster than cold)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
