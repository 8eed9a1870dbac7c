"""Device presets: LLVM / CUDA settings and roofline figures for common ARM cores and NVIDIA GPUs.

Roofline figures are for the whole chip of a typical board or card with that core/GPU: fp32 peak
FLOP/s (cores x clock x fp32 FLOP per cycle, FMA counted as 2) and DRAM bandwidth. Sources:
- Cortex-A53: Arm Cortex-A53 TRM (one 64-bit NEON FMA pipe -> 4 fp32 FLOP/cycle); board = Raspberry
  Pi 3 B (4 cores @ 1.2 GHz, 32-bit LPDDR2-900 -> 3.6 GB/s), raspberrypi.com product brief.
- Cortex-A72: Arm Cortex-A72 Software Optimization Guide (128-bit FMLA, 1/cycle -> 8 FLOP/cycle);
  board = Raspberry Pi 4 B (4 @ 1.5 GHz, 32-bit LPDDR4-3200 -> 12.8 GB/s), raspberrypi.com brief.
- Cortex-A76: Arm Cortex-A76 Software Optimization Guide (two 128-bit FMA pipes -> 16 FLOP/cycle);
  board = Raspberry Pi 5 (4 @ 2.4 GHz, 32-bit LPDDR4X-4267 -> 17 GB/s), raspberrypi.com brief.
- Neoverse-N1: Arm Neoverse N1 Software Optimization Guide (two 128-bit FMA pipes -> 16 FLOP/cycle);
  chip = AWS Graviton2 (64 cores @ 2.5 GHz, 8 x DDR4-3200 -> 204.8 GB/s), AWS re:Invent 2019 talk.
- T4: NVIDIA T4 datasheet (8.1 TFLOP/s fp32, 320 GB/s GDDR6), sm_75.
- A100: NVIDIA A100 datasheet, SXM4 40 GB (19.5 TFLOP/s fp32, 1,555 GB/s HBM2), sm_80.
- H100: NVIDIA H100 datasheet, SXM5 (67 TFLOP/s fp32, 3.35 TB/s HBM3), sm_90.
Dispatch overhead: ~2 us per Relax VM kernel call on the CPU cores (more on the small in-order A53),
~5 us per kernel launch on a GPU (launch latency plus VM dispatch).
"""

from __future__ import annotations

from dataclasses import dataclass

from tsir.backends.roofline import Roofline

ARM_TRIPLE = "aarch64-linux-gnu"
ARM_CROSS_CC = "aarch64-linux-gnu-g++"


@dataclass(frozen=True)
class ArmCore:
    mcpu: str  # LLVM's -mcpu
    mattr: tuple[str, ...]  # LLVM features: NEON everywhere, dotprod/fp16 from Armv8.2 on
    roofline: Roofline


@dataclass(frozen=True)
class Gpu:
    arch: str  # sm_XX
    roofline: Roofline


ARM_CORES = {
    "cortex-a53": ArmCore("cortex-a53", ("+neon",), Roofline("cortex-a53", 4 * 1.2e9 * 4, 3.6e9, 4e-6)),
    "cortex-a72": ArmCore("cortex-a72", ("+neon",), Roofline("cortex-a72", 4 * 1.5e9 * 8, 12.8e9, 2e-6)),
    "cortex-a76": ArmCore("cortex-a76", ("+neon", "+dotprod", "+fullfp16"),
                          Roofline("cortex-a76", 4 * 2.4e9 * 16, 17.0e9, 2e-6)),
    "neoverse-n1": ArmCore("neoverse-n1", ("+neon", "+dotprod", "+fullfp16"),
                           Roofline("neoverse-n1", 64 * 2.5e9 * 16, 204.8e9, 2e-6)),
}
# Plain "arm": Cortex-A72 code is Armv8.0-A + NEON, so it runs on every core above.
DEFAULT_ARM_CORE = "cortex-a72"

GPUS = {
    "t4": Gpu("sm_75", Roofline("t4", 8.1e12, 320e9, 5e-6)),
    "a100": Gpu("sm_80", Roofline("a100", 19.5e12, 1555e9, 5e-6)),
    "h100": Gpu("sm_90", Roofline("h100", 67e12, 3350e9, 5e-6)),
}
# Plain "cuda" without a GPU on the machine: compile for the A100 generation (sm_80).
DEFAULT_GPU = "a100"
