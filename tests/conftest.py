"""Suite-wide settings: eager quantizers and one torch thread per test process.

Compiling the fused quantizers takes seconds per new shape; the tests that check the
compiled path against the eager one (tests/quant/test_fused_path.py) switch it on for
themselves. Test tensors are small, so one thread is as fast as two, and two pytest-xdist
workers then do not oversubscribe the two cores.
"""

import os

import torch

os.environ.setdefault("MPSCTL_FUSED", "0")
torch.set_num_threads(1)
