"""What a trial used of its machine: MLflow's system-metrics monitors (mlflow/system_metrics: CPU and memory, disk,
network, NVIDIA or AMD GPUs where present), sampled in the trial's own process, on the node it runs on, and sent with
its results. MLflow's own `SystemMetricsMonitor` writes from the process that samples; here trials never write to
MLflow (docs/design.md, "MLflow layout"), so the driver logs the samples as the run's `system/<name>` metrics, the
names MLflow gives them, which its UI shows in the run's System metrics tab.

A report carries the mean of the samples taken since the previous one (MLflow's aggregation, `aggregate_metrics`);
an epoch shorter than the sampling interval carries none, except the trial's first and last, which take a sample
then when none is pending: every trial run has one, a trial ASHA stops after its first epoch included.
"""
from __future__ import annotations

import os
import threading

PREFIX = "system/"
# MLflow samples every 10 s by default; a search's trials often last seconds, so 1 s here. MLflow's own variable
# (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL, seconds) sets it, as it does for MLflow's monitor.
SAMPLING_SECONDS = 1.0
INTERVAL_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"


def sampling_seconds() -> float:
    return float(os.environ.get(INTERVAL_ENV) or SAMPLING_SECONDS)


def _monitors() -> list:
    """MLflow's default monitors, GPU ones as its SystemMetricsMonitor picks them: NVIDIA (nvidia-ml-py), else AMD
    (pyrsmi), else none (each raises on a machine without its GPUs or its library)."""
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
    from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
    from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor
    from mlflow.system_metrics.metrics.rocm_monitor import ROCMMonitor

    out = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
    for gpu in (GPUMonitor, ROCMMonitor):
        try:
            out.append(gpu())
            break
        except Exception:  # noqa: BLE001 - no such GPU or library here: MLflow skips it the same way
            continue
    return out


class Sampler:
    """A daemon thread sampling every `interval` seconds until `close()`; `take()` returns the mean of the samples
    since the last `take()` as {"system/<name>": value}."""

    def __init__(self, interval: float | None = None):
        import psutil

        self.interval = sampling_seconds() if interval is None else interval
        self.monitors = _monitors()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._taken = 0   # samples since the last take
        psutil.cpu_percent()   # its first call has no interval to measure over (it returns 0.0): spent here
        self._thread = threading.Thread(target=self._loop, name="sparsebench-system-metrics", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for m in self.monitors:
            m.collect_metrics()
        self._taken += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._sample()

    def take(self, now: bool = False) -> dict[str, float]:
        """`now`: sample at once if no sample is pending (a trial's first and last report)."""
        with self._lock:
            if now and not self._taken:
                self._sample()
            if not self._taken:
                return {}
            out = {}
            for m in self.monitors:
                out.update(m.aggregate_metrics())
                m.clear_metrics()
            self._taken = 0
        return {PREFIX + k: float(v) for k, v in out.items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
