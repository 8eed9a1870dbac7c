"""Benchmarks. Every system runs on 2 threads: set before TVM, oneDNN (GNU OpenMP) or torch start.

OpenMP threads (PyTorch's and oneDNN's) wait passively unless ``OMP_WAIT_POLICY`` says otherwise: on a
machine with other load, spinning OpenMP barriers cost milliseconds per parallel region (measured here:
a 1x64x256 oneDNN linear took 20 ms spinning, 26 µs passive), which would swamp every OpenMP system.
"""

import os

os.environ["TVM_NUM_THREADS"] = "2"
os.environ["OMP_NUM_THREADS"] = "2"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
