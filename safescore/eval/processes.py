"""This process' place in a (possibly sharded, ``accelerate launch``) evaluation run."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class ProcessInfo:
    """This process' place in a (possibly sharded) run."""

    index: int = 0
    count: int = 1
    device: str = "cpu"
    _state: object = None

    def barrier(self):
        if self._state is not None and self.count > 1:
            self._state.wait_for_everyone()


def process_info(device: str | None = None) -> ProcessInfo:
    """Rank and world size from Accelerate (``accelerate launch``); one process otherwise.

    ``device=None`` takes Accelerate's device for this process (its own GPU under multi-GPU).
    """
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 or "ACCELERATE_MIXED_PRECISION" in os.environ:
        from accelerate import PartialState

        use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        state = PartialState(cpu=use_cpu or not torch.cuda.is_available())
        if state.num_processes != world_size:
            raise ValueError(
                f"WORLD_SIZE is {world_size} but Accelerate set up {state.num_processes} "
                "process(es); refusing to run, each process would redo all the work"
            )
        return ProcessInfo(
            state.process_index, state.num_processes, device or str(state.device), state
        )

    return ProcessInfo(0, 1, device or ("cuda" if torch.cuda.is_available() else "cpu"))
