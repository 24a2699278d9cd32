import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(max(1, min(4, torch.get_num_threads())))


@pytest.fixture(scope="session")
def smollm2():
    """The real default target in fp32 (exact-equality tests) — converted from GGUF once per cache dir."""
    from taps_engine import load_target

    return load_target(dtype="fp32")
