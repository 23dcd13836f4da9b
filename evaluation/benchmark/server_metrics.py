"""Sample a server's Prometheus metrics while a benchmark runs (TensorRT-LLM's Triton backend
exports KV-cache block use on :8002/metrics).

A background thread scrapes every `interval_s`, keeps each scrape as a file beside the benchmark
(they are measurements, kept raw), and summarises the KV cache: the highest used fraction and used
block count seen, and the block total. A server without metrics (the reference stack) gives None.
Scrape failures are counted, never raised: the benchmark is what matters.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from enginesweep.engines.trtllm.outputs import OutputFormatError, kv_cache_blocks


class MetricsSampler:
    """Context manager: scrape `url` every `interval_s` into `folder` while the block runs."""

    def __init__(self, url: str | None, folder: Path, *, interval_s: float = 5.0):
        self.url, self.folder, self.interval_s = url, folder, interval_s
        self.samples: list[dict[str, float]] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MetricsSampler:
        if self.url is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
            self.scrape()  # one last look at the end of the run

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scrape()
            self._stop.wait(self.interval_s)

    def scrape(self) -> None:
        """One scrape: saved as `scrape-NNNN.txt`, its KV-cache blocks kept for the summary."""
        if self.url is None:
            return
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            self.failures += 1
            return
        (self.folder / f"scrape-{len(self.samples) + self.failures:04d}.txt").write_text(text)
        try:
            self.samples.append(kv_cache_blocks(text))
        except OutputFormatError:
            self.failures += 1

    def summary(self) -> dict[str, float] | None:
        """Peak KV-cache use over the run, or None when nothing was sampled."""
        if not self.samples:
            return None
        return {
            "kv_cache_fraction_max": max(s.get("fraction", 0.0) for s in self.samples),
            "kv_cache_used_blocks_max": max(s.get("used", 0.0) for s in self.samples),
            "kv_cache_total_blocks": max(s.get("max", 0.0) for s in self.samples),
            "metrics_samples": float(len(self.samples)),
            "metrics_scrape_failures": float(self.failures),
        }
