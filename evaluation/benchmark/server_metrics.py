"""Sample a server's metrics while a benchmark runs: TensorRT-LLM's Triton backend exports
KV-cache blocks as Prometheus text on :8002/metrics; trtllm-serve returns its iteration
statistics as JSON on /metrics (told apart by their content).

A background thread scrapes every `interval_s`, keeps each scrape as a file beside the benchmark
(they are measurements, kept raw), and summarises the KV cache: the highest used fraction and used
block count seen, the block total, and block reuse over the run. Both servers count reused blocks
(and trtllm-serve missed ones) since they started, so the run's reuse is the last sample minus
the first (the warm-up before the first sample is left out); the hit rate is reused / (reused +
missed) where the misses are known. A server without metrics (the reference stack) gives None.
Scrape failures are counted, never raised: the benchmark is what matters.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from enginesweep.engines.trtllm.outputs import OutputFormatError, iteration_kv_stats, kv_cache_blocks


class MetricsSampler:
    """Context manager: scrape `url` every `interval_s` into `folder` while the block runs."""

    def __init__(self, url: str | None, folder: Path, *, interval_s: float = 5.0):
        self.url, self.folder, self.interval_s = url, folder, interval_s
        self.samples: list[dict[str, float]] = []
        self.failures = 0
        self.empty = 0
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
        (self.folder / f"scrape-{len(self.samples) + self.failures + self.empty:04d}.txt").write_text(text)
        try:
            if text.lstrip().startswith("["):  # trtllm-serve's iteration statistics
                sample = iteration_kv_stats(text)
                if sample is None:  # no iteration ran since the last read
                    self.empty += 1
                    return
                self.samples.append(sample)
            else:
                self.samples.append(kv_cache_blocks(text))
        except OutputFormatError:
            self.failures += 1

    def summary(self) -> dict[str, float] | None:
        """Peak KV-cache use over the run, or None when nothing was sampled."""
        if not self.samples:
            return None
        summary = {
            "kv_cache_fraction_max": max(s.get("fraction", 0.0) for s in self.samples),
            "kv_cache_used_blocks_max": max(s.get("used", 0.0) for s in self.samples),
            "kv_cache_total_blocks": max(s.get("max", 0.0) for s in self.samples),
            "metrics_samples": float(len(self.samples)),
            "metrics_scrape_failures": float(self.failures),
        }
        return summary | reuse_summary(self.samples)


def reuse_summary(samples: list[dict[str, float]]) -> dict[str, float]:
    """Blocks reused (and missed, where the server counts them) between the first and the last
    sample, with the hit rate and the tokens reused; empty when the server reports no reuse."""
    with_reuse = [s for s in samples if "reused" in s]
    if not with_reuse:
        return {}
    first, last = with_reuse[0], with_reuse[-1]
    reused = last["reused"] - first["reused"]
    found = {"kv_reused_blocks": reused}
    if last.get("tokens_per"):
        found["kv_reused_tokens"] = reused * last["tokens_per"]
    if "missed" in first and "missed" in last:
        missed = last["missed"] - first["missed"]
        found["kv_missed_blocks"] = missed
        if reused + missed > 0:
            found["kv_cache_hit_rate"] = reused / (reused + missed)
    return found
