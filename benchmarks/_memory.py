"""Peak resident memory of a block of code, shared by the benchmarks (Linux /proc)."""

from __future__ import annotations

import os
import threading
import time


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples resident memory in a thread; ``peak - start`` is the method's extra memory.

    :meth:`sampler_cpu` is the sampling thread's own CPU time (seconds), to subtract from the
    process's CPU time (it costs a few % of a core).
    """

    def __enter__(self):
        self.start = _rss_bytes()
        self.peak = self.start
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self._clock = time.pthread_getcpuclockid(self._t.ident)
        return self

    def sampler_cpu(self) -> float:
        """CPU seconds the sampling thread has used so far."""
        return time.clock_gettime(self._clock)

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, _rss_bytes())
