"""A one-line per-epoch progress bar on stderr.

tqdm is not installed here (ultralytics 8.4 ships its own bar and no longer depends on it), and importing
ultralytics' bar would import ultralytics itself; this is the few lines we need. Off when stderr is not a
terminal, so logs and captured output stay clean.
"""

import sys
import time


class ProgressBar:
    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None, min_interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.desc, self.min_interval = total, desc, min_interval
        self.count, self.start, self.last_draw = 0, time.perf_counter(), 0.0
        self.postfix = ""

    def update(self, n: int = 1, **postfix) -> None:
        self.count += n
        if postfix:
            self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in postfix.items())
        now = time.perf_counter()
        if self.enabled and (now - self.last_draw >= self.min_interval or self.count >= self.total):
            self.last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        width = 20
        filled = int(width * self.count / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        line = f"\r{self.desc} [{bar}] {self.count}/{self.total} {self.count / elapsed:.2f} it/s {self.postfix}"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
