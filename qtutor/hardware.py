"""What this CPU can do, read at run time: its name and the vector and matrix extensions quantized kernels use.

Introduced in notebook 07 (which kernels a CPU has decides whether BF16, FP16 or
INT8 is fast on it) and used by ``benchmarks/`` to label every result. Never
assume these: laptops, servers and cloud machines differ, and so do the
machines this course has been measured on.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["EXTENSIONS", "cpu_name", "cpu_flags", "extensions", "describe_cpu", "cache_sizes"]

# The /proc/cpuinfo flags that matter for quantized and half-precision kernels, and what each adds.
EXTENSIONS = {
    "avx2": "256-bit vectors (integer dot products via vpmaddubsw: int16 sums that can saturate)",
    "avx512f": "512-bit vectors",
    "avx512_vnni": "unsigned-by-signed int8 dot products summed straight into int32 (vpdpbusd, vpdpbusds saturating)",
    "avx_vnni_int8": "signed-by-signed int8 dot products (vpdpbssd)",
    "avx512_bf16": "BF16 dot products (vdpbf16ps)",
    "avx512_fp16": "FP16 arithmetic",
    "amx_tile": "AMX matrix tiles",
    "amx_int8": "AMX int8 matrix multiply",
    "amx_bf16": "AMX BF16 matrix multiply",
    "amx_fp16": "AMX FP16 matrix multiply",
}


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo), or the platform's processor string."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """Every feature flag the CPU reports (empty where /proc/cpuinfo does not exist)."""
    line = next((line for line in _cpuinfo().splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def extensions() -> list[str]:
    """The extensions of :data:`EXTENSIONS` this CPU has, in that table's order."""
    flags = cpu_flags()
    return [name for name in EXTENSIONS if name in flags]


def describe_cpu() -> str:
    """One line: the CPU's name and which of the extensions it has and lacks."""
    have = extensions()
    lacks = [name for name in EXTENSIONS if name not in have]
    return f"{cpu_name()}: has {', '.join(have) or 'none of the listed extensions'}; lacks {', '.join(lacks) or 'none'}"


def cache_sizes() -> dict[str, int]:
    """Bytes of each data cache level one core sees, from /sys (e.g. {"L1": 32768, "L2": 1048576, "L3": ...}).

    Empty where the kernel does not report caches. The last level is often
    shared by several cores; the size is the whole shared cache.
    """
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        units = {"K": 1024, "M": 1024**2, "G": 1024**3}
        sizes[f"L{level}"] = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    return sizes
