"""Kernel tests: without a GPU, run the Triton kernels on the CPU interpreter.

TRITON_INTERPRET is read when a kernel is decorated, i.e. when vssflow's triton modules are first
imported; the kernel package imports them lazily, so setting it here (at collection) is early enough.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
