"""Suite-wide settings: the eager quantizer path unless a test asks for the compiled one.

Compiling the fused quantizers takes seconds per shape; tests that check the compiled path
against the eager one (tests/quant/test_fused_path.py) switch it on themselves.
"""

import os

os.environ.setdefault("MPSCTL_FUSED", "0")

# Under pytest-xdist every worker gets one torch thread: two workers on two cores would
# otherwise run four threads and slow each other down.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
