import os

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests are many small ops; one thread avoids busy-waiting on a shared 2-core machine.
    torch.set_num_threads(1)
    yield
