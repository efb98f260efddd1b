"""A tiny model and a fixed batch shared by the distributed test and its worker script."""

from pathlib import Path

import torch

from rlchat.config import CrossEntropyConfig, ModelConfig
from rlchat.dataset import Example
from rlchat.model import Seq2Seq
from rlchat.runs import RunDir
from rlchat.train.cross_entropy import CrossEntropyTrainer
from rlchat.train.distributed import SINGLE, World

_g = torch.Generator().manual_seed(0)
BATCH = [
    Example(
        source=torch.randint(
            5, 40, (int(torch.randint(1, 9, (1,), generator=_g)),), generator=_g
        ).tolist(),
        reply=torch.randint(
            5, 40, (int(torch.randint(1, 9, (1,), generator=_g)),), generator=_g
        ).tolist(),
        pair=None,
    )
    for _ in range(16)
]


def make_trainer(run: Path, world: World = SINGLE) -> CrossEntropyTrainer:
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=40, embedding_dim=8, hidden_size=16, dropout=0.0))
    return CrossEntropyTrainer(
        run=RunDir(run),
        run_config={},
        tokenizer_json="{}",
        model=model,
        train_examples=BATCH,
        valid_examples=BATCH,
        config=CrossEntropyConfig(batch_size=16, lr=1e-2, warmup_steps=0),
        device=torch.device("cpu"),
        tensorboard=False,
        world=world,
    )
