"""One data-parallel training step on a fixed batch; rank 0 saves the parameters.

Run by tests/test_distributed.py under torch.distributed.run with two CPU processes.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from ddp_common import BATCH, make_trainer  # noqa: E402

from rlchat.checkpoint import dedupe_shared  # noqa: E402
from rlchat.train.distributed import init_world  # noqa: E402

world = init_world(torch.device("cpu"))
trainer = make_trainer(Path(sys.argv[1]) / f"rank{world.rank}", world)
trainer.train_step(BATCH[world.rank :: world.size], total_steps=1)
if world.is_main:
    weights = dedupe_shared(trainer.model.state_dict())  # tied embeddings share storage
    save_file(weights, Path(sys.argv[1]) / "distributed.safetensors")
