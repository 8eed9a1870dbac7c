"""Benchmarks. Every system runs on 2 threads: set before TVM, oneDNN (GNU OpenMP) or torch start.

How idle threads wait follows the machine's load (unless set in the environment): on a quiet machine
the runtimes' defaults (GNU OpenMP for PyTorch and oneDNN: spin a while, then sleep; TVM's pool: spin
with yields), which is what users get and keeps thread wake-ups off the critical path; on a loaded
machine (1-minute load average >= 1 at start) ``OMP_WAIT_POLICY=PASSIVE`` and
``TVM_THREAD_POOL_SPIN_COUNT=0``, because spinning barriers then cost milliseconds per parallel region
(measured here: a 1x64x256 oneDNN linear took 20 ms spinning, 26 µs passive; a 16x64 MLP built by
TVM with parallel kernels 16.6 ms spinning, 0.10 ms with no spin), which would swamp every system
that uses them. On a quiet machine TVM's pool still gets a short spin (``TVM_THREAD_POOL_SPIN_COUNT=1000``):
with TVM's default a worker of ``tvm_baseline``'s process (pinned to one core) kept spinning with yields
through the other systems' blocks, about half a core all the time, and stalled ``tsir_exact`` at batch 1
from 0.1-0.2 ms to 14-16 ms (inception_block, bert_layer); with 1000 neither stalls nor changes
``tvm_baseline``'s own time beyond noise. The JSON records both settings.
"""

import os

os.environ["TVM_NUM_THREADS"] = "2"
os.environ["OMP_NUM_THREADS"] = "2"
LOADED = os.getloadavg()[0] >= 1.0
if LOADED:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0" if LOADED else "1000")
