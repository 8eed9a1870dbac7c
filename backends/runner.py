"""The native runner (``backends/native/runner``) driven from Python: run an exported library on .npy
inputs, natively or under ``qemu-aarch64``, and read back its outputs and timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsir.backends import native_files
from tsir.backends.targets import TargetSpec
from tsir.errors import TsirError


@dataclass(frozen=True)
class RunResult:
    outputs: list[np.ndarray]
    median_ms: float
    timing: dict


@dataclass(frozen=True)
class NativeRunner:
    """``tsir_runner`` for one machine kind; ``prefix`` is the emulator command, if any."""

    binary: Path
    prefix: tuple[str, ...] = ()
    timeout_s: float = 600.0

    @classmethod
    def for_target(cls, spec: TargetSpec) -> NativeRunner:
        """The target's runner (``spec.native_runner``: the host's for x86, aarch64 for ARM) under its emulator."""
        if spec.native_runner is None:
            raise TsirError(f"the native runner runs CPU libraries only; {spec.name} libraries need a GPU host")
        if spec.emulator and shutil.which(spec.emulator[0]) is None:
            raise TsirError(f"{spec.emulator[0]} is not installed; run scripts/setup.sh (it installs qemu-user)")
        return cls(_binary(spec.native_runner), spec.emulator)

    def run(self, library: Path, inputs: Sequence[np.ndarray], warmup: int = 1, repeat: int = 10) -> RunResult:
        """Run ``main`` of ``library`` on ``inputs``; raises TsirError with the runner's message on failure."""
        with tempfile.TemporaryDirectory(prefix="tsir-run-") as tmp:
            paths = []
            for i, array in enumerate(inputs):
                paths.append(Path(tmp) / f"input_{i}.npy")
                np.save(paths[-1], np.ascontiguousarray(array))
            cmd = [*self.prefix, str(self.binary), str(Path(library).resolve()), *map(str, paths),
                   "--out", tmp, "--warmup", str(warmup), "--repeat", str(repeat)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
            except subprocess.TimeoutExpired as err:
                raise TsirError(f"tsir_runner timed out after {self.timeout_s:g} s on {library}") from err
            if done.returncode != 0:
                raise TsirError(f"tsir_runner failed on {library} (exit {done.returncode}): {done.stderr.strip()}")
            timing = json.loads(done.stdout.strip().splitlines()[-1])
            outputs = [np.load(Path(tmp) / f"output_{i}.npy") for i in range(timing["outputs"])]
        return RunResult(outputs, timing["median_ms"], timing)

    def __call__(self, library: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.run(library, inputs, warmup=1, repeat=1).outputs


def _binary(arch: str) -> Path:
    path = native_files.runner(arch)
    if not path.is_file():
        raise TsirError(f"native runner {path} is not built; {native_files.BUILD_HINT}")
    return path
