"""qtutor.hardware reads /proc/cpuinfo and /sys as they are, and says what it lacks as well as what it has."""

from pathlib import Path

from qtutor import hardware

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_tile
"""


def test_reads_name_and_flags(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: CPUINFO)
    assert hardware.cpu_name() == "Example CPU 9000"
    assert {"avx2", "avx512_vnni", "amx_tile"} <= hardware.cpu_flags()
    assert hardware.extensions() == ["avx2", "avx512f", "avx512_vnni", "amx_tile"]
    line = hardware.describe_cpu()
    assert line.startswith(
        "Example CPU 9000: has avx2, avx512f, avx512_vnni, amx_tile; lacks avx_vnni_int8, avx512_bf16"
    )


def test_without_cpuinfo_it_still_answers(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: "")
    assert hardware.cpu_flags() == set() and hardware.extensions() == []
    assert hardware.cpu_name()  # the platform's processor or machine string
    assert "has none of the listed extensions" in hardware.describe_cpu()


def test_cache_sizes_match_sysfs():
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    sizes = hardware.cache_sizes()
    if not root.exists():
        assert sizes == {}
        return
    for index in root.glob("index*"):
        if (index / "type").read_text().strip() != "Instruction":
            text = (index / "size").read_text().strip()
            level = (index / "level").read_text().strip()
            assert sizes[f"L{level}"] == int(text[:-1]) * 1024 ** "KMG".index(text[-1]) * 1024
