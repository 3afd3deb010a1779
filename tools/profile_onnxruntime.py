"""Which instructions ONNX Runtime's INT8 model spends its time in: a Linux `perf` profile (notebook 10, section 6).

    python tools/profile_onnxruntime.py MODEL.onnx [--image_size 64] [--batch 16] [--seconds 6]

Runs the model in one ONNX Runtime thread for ``--seconds`` under ``perf record`` (Linux perf must be installed and
allowed: ``kernel.perf_event_paranoid`` 2 or less for your own processes), then, for the hottest addresses in
ONNX Runtime's library, disassembles the code around each (``objdump``) and reports the share of all samples that
fall within 64 bytes of a VNNI instruction (``vpdpbusd``/``vpdpbusds``: unsigned 8-bit times signed 8-bit, summed
into 32 bits). The library has no symbols, so this is the evidence ONNX Runtime leaves: which loop the samples sit in.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import time, torch
from qtutor.deploy import OnnxRuntimeModel
model = OnnxRuntimeModel({path!r}, threads=1)
images = torch.randn({batch}, 3, {size}, {size})
start = time.time()
while time.time() - start < {seconds}:
    model(images)
"""
VNNI = re.compile(r"\bvpdpbusds?\b")


def hot_addresses(model: Path, size: int, batch: int, seconds: float, data: Path) -> list[tuple[float, int]]:
    """(share of all samples, address in ONNX Runtime's library) of each sampled address there, hottest first."""
    code = RUN.format(path=str(model), batch=batch, size=size, seconds=seconds)
    subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-o", str(data), sys.executable, "-c", code],
        check=True,
        capture_output=True,
    )
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--sort", "dso,sym", "--percent-limit", "0"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # Without symbols perf names each sample by its address in the library: "2.92%  onnxruntime_...so  [.] 0xab536e"
    found = re.findall(r"([\d.]+)%\s+onnxruntime_pybind11_state\S*\s+\[\.\]\s+0x([0-9a-f]+)", report)
    return [(float(share) / 100, int(address, 16)) for share, address in found]


def library() -> Path:
    import onnxruntime

    return next(Path(onnxruntime.__file__).parent.glob("capi/onnxruntime_pybind11_state*.so"))


def near_vnni(address: int, binary: Path, window: int = 64) -> bool:
    """Whether the machine code within ``window`` bytes of ``address`` holds a VNNI dot-product instruction."""
    listing = subprocess.run(
        [
            "objdump",
            "-d",
            f"--start-address={address - window:#x}",
            f"--stop-address={address + window:#x}",
            str(binary),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return bool(VNNI.search(listing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--top", type=int, default=300, help="hottest distinct addresses to disassemble")
    args = parser.parse_args()
    binary = library()
    with tempfile.TemporaryDirectory() as folder:
        found = hot_addresses(args.model, args.image_size, args.batch, args.seconds, Path(folder) / "perf.data")
    hot = found[: args.top]
    vnni = sum(share for share, address in hot if near_vnni(address, binary))
    print(
        f"ONNX Runtime's library: {sum(s for s, _ in found):.0%} of all samples; its {len(hot)} hottest addresses: "
        f"{sum(s for s, _ in hot):.0%}"
    )
    print(f"within 64 bytes of a vpdpbusd/vpdpbusds instruction (AVX-512 VNNI): {vnni:.0%} of all samples")


if __name__ == "__main__":
    main()
