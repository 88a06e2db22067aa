"""Host health figures for the heartbeat: CPU, memory, disk, temperature."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
# Raspberry Pi firmware exposes the throttling bits here on Bookworm kernels.
PI_THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
PROC_STATUS = Path("/proc/self/status")


@dataclass(slots=True)
class HealthProbe:
    """Measures the node process and host between two calls of `sample`."""

    disk_path: Path = Path()
    _last_wall: float = field(default_factory=time.monotonic)
    _last_cpu: float = field(default_factory=lambda: sum(os.times()[:2]))

    def sample(self) -> dict[str, float | bool | None]:
        """Return heartbeat fields; figures a platform lacks are None."""
        now_wall = time.monotonic()
        now_cpu = sum(os.times()[:2])
        elapsed = max(now_wall - self._last_wall, 1e-9)
        cpu_percent = 100.0 * (now_cpu - self._last_cpu) / elapsed
        self._last_wall, self._last_cpu = now_wall, now_cpu
        return {
            "cpu_percent": round(max(cpu_percent, 0.0), 1),
            "memory_mb": round(resident_memory_mb(), 1),
            "disk_free_mb": round(self._disk_free_mb(), 1),
            "cpu_temperature_c": cpu_temperature_c(),
            "throttled": pi_throttled(),
        }

    def _disk_free_mb(self) -> float:
        path = self.disk_path if self.disk_path.exists() else Path()
        return shutil.disk_usage(path).free / 1e6


def resident_memory_mb() -> float:
    """Return the resident set size of this process in MB (0 if unknown)."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def cpu_temperature_c() -> float | None:
    """Return the SoC temperature in degrees Celsius, or None off a Pi/Jetson."""
    try:
        return round(int(THERMAL_ZONE.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def pi_throttled() -> bool | None:
    """Return True while the Pi firmware reports throttling, None elsewhere."""
    try:
        bits = int(PI_THROTTLED.read_text().strip(), 0)
    except (OSError, ValueError):
        return None
    # Bits 0-3: under-voltage, frequency capped, throttled, soft temperature limit.
    return bool(bits & 0xF)
