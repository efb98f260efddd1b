"""Cross-entropy (teacher-forced maximum likelihood) training, resumable step for step."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlchat import __version__
from rlchat.batching import Batch, bucketed_batches, make_batch
from rlchat.checkpoint import (
    capture_rng,
    flatten_optimizer,
    load_bundle,
    load_weights,
    restore_rng,
    save_bundle,
    unflatten_optimizer,
)
from rlchat.config import (
    CrossEntropyConfig,
    DataConfig,
    ModelConfig,
    TokenizerConfig,
    from_dict,
    to_dict,
)
from rlchat.corpus import Corpus
from rlchat.dataset import Example, prepare_dataset
from rlchat.model import Seq2Seq, count_parameters
from rlchat.tokenizer import ChatTokenizer
from rlchat.train.loop import (
    Budget,
    MetricsLog,
    RunDir,
    RunError,
    check_writable,
    pick_device,
    seed_everything,
    stop_on_interrupt,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_valid_loss: float = math.inf
    evals_without_improvement: int = 0
    lr_scale: float = 1.0
    stopped_early: bool = False


def learning_rate(config: CrossEntropyConfig, state: TrainState, total_steps: int) -> float:
    """Linear warm-up, then constant, cosine decay, or plateau halving (via lr_scale)."""
    warmup = min(1.0, (state.step + 1) / max(1, config.warmup_steps))
    lr = config.lr * warmup * state.lr_scale
    if config.schedule == "cosine" and total_steps > 0:
        progress = min(1.0, state.step / total_steps)
        lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


def build_optimizer(model: torch.nn.Module, config: CrossEntropyConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on CPU, where it is both exact and fastest here."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def token_loss(
    model: Seq2Seq, batch: Batch, *, teacher_forcing: float = 1.0, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over the real target tokens of a batch (padding never scored)."""
    logits = model(
        batch.src,
        batch.src_lengths,
        batch.tgt_in,
        batch.tgt_mask,
        teacher_forcing=teacher_forcing,
    )  # (N, V)
    return F.cross_entropy(
        logits.float(), batch.tgt_out[batch.tgt_mask], label_smoothing=label_smoothing
    )


@torch.inference_mode()
def evaluate_loss(
    model: Seq2Seq, examples: list[Example], device: torch.device, batch_size: int = 256
) -> dict[str, float]:
    """Token-level loss and perplexity of references, in a fixed length-sorted order."""
    was_training = model.training
    model.eval()
    order = sorted(
        range(len(examples)), key=lambda i: (len(examples[i].reply), len(examples[i].source))
    )
    total, tokens = 0.0, 0
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start : start + batch_size]]
        batch = make_batch([e.source for e in chunk], [e.reply for e in chunk]).to(device)
        with autocast(device):
            logits = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        total += F.cross_entropy(
            logits.float(), batch.tgt_out[batch.tgt_mask], reduction="sum"
        ).item()
        tokens += batch.target_tokens
    model.train(was_training)
    loss = total / max(1, tokens)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


class CrossEntropyTrainer:
    """Trains a Seq2Seq on (source, reply) examples and writes a resumable run directory."""

    def __init__(
        self,
        *,
        run: RunDir,
        run_config: dict[str, Any],
        tokenizer_json: str,
        model: Seq2Seq,
        train_examples: list[Example],
        valid_examples: list[Example],
        config: CrossEntropyConfig,
        device: torch.device,
        tensorboard: bool = True,
    ) -> None:
        self.run = run
        self.run_config = run_config
        self.tokenizer_json = tokenizer_json
        self.model = model.to(device)
        self.train_examples = train_examples
        self.valid_examples = valid_examples[: config.max_eval_pairs]
        self.config = config
        self.device = device
        self.optimizer = build_optimizer(self.model, config)
        self.state = TrainState()
        self.metrics = MetricsLog(run, tensorboard=tensorboard)
        self.lengths = [(len(e.reply), len(e.source)) for e in train_examples]
        self.batches_per_epoch = math.ceil(len(train_examples) / config.batch_size)
        self.stop_requested = False

    # --- checkpoints ---------------------------------------------------------------------------

    def bundle_config(self) -> dict[str, Any]:
        return {**self.run_config, "train_state": asdict(self.state)}

    def save_checkpoint(self) -> None:
        optimizer_tensors, optimizer_meta = flatten_optimizer(self.optimizer)
        rng_tensors, rng_meta = capture_rng()
        save_bundle(
            self.run.step_path(self.state.step),
            model=self.model,
            config=self.bundle_config(),
            tokenizer_json=self.tokenizer_json,
            state={"train": asdict(self.state), "optimizer": optimizer_meta, "rng": rng_meta},
            state_tensors={**optimizer_tensors, **rng_tensors},
        )
        self.run.prune(self.config.keep_checkpoints)

    def save_best(self) -> None:
        save_bundle(
            self.run.best_path,
            model=self.model,
            config=self.bundle_config(),
            tokenizer_json=self.tokenizer_json,
        )

    def resume(self) -> bool:
        """Continue from the newest good checkpoint; False when there is none."""
        path = self.run.latest_good_checkpoint()
        if path is None:
            return False
        bundle = load_bundle(path, with_state=True)
        load_weights(self.model, {k: v.to(self.device) for k, v in bundle.weights.items()})
        self.optimizer.load_state_dict(
            unflatten_optimizer(bundle.state_tensors, bundle.state["optimizer"])
        )
        self.state = TrainState(**bundle.state["train"])
        restore_rng(bundle.state_tensors, bundle.state["rng"])
        self.metrics.truncate_after(self.state.step)
        logger.info("resumed from %s (step %d, epoch %d)", path, self.state.step, self.state.epoch)
        return True

    # --- training ------------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return bucketed_batches(
            self.lengths, self.config.batch_size, seed=self.config.seed * 10007 + epoch
        )

    def train_step(self, batch: Batch, total_steps: int) -> float:
        lr = learning_rate(self.config, self.state, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device):
            loss = token_loss(
                self.model,
                batch,
                teacher_forcing=self.config.teacher_forcing,
                label_smoothing=self.config.label_smoothing,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.item()

    def validate(self) -> dict[str, float]:
        """Validation figures; tracks the best model, the plateau schedule and early stopping."""
        result = evaluate_loss(self.model, self.valid_examples, self.device)
        if result["loss"] < self.state.best_valid_loss - 1e-4:
            self.state.best_valid_loss = result["loss"]
            self.state.evals_without_improvement = 0
            self.save_best()
        else:
            self.state.evals_without_improvement += 1
            if self.config.schedule == "plateau":
                # Halve the rate when validation stalls (a cheap, robust schedule for LSTMs).
                self.state.lr_scale *= 0.5
            if (
                self.config.patience
                and self.state.evals_without_improvement >= self.config.patience
            ):
                self.state.stopped_early = True
        self.metrics.log(
            self.state.step,
            {"valid/loss": result["loss"], "valid/perplexity": result["perplexity"]},
        )
        return result

    def fit(self, *, progress: bool = True) -> dict[str, Any]:
        """Train until the budget or early stopping; returns a summary of the run."""
        config = self.config
        budget = Budget(config.epochs, config.max_steps, config.max_minutes)
        total_steps = config.max_steps or config.epochs * self.batches_per_epoch
        self.model.train()
        bar = tqdm(
            total=total_steps,
            initial=self.state.step,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            desc="train ce",
        )
        self.pairs_done, self.started = 0, time.perf_counter()
        try:
            with stop_on_interrupt(self):
                last_valid = self._train_until_done(budget, bar, total_steps)
        except KeyboardInterrupt:
            # Ctrl-C lands between steps: keep the work done; `--resume` continues from here.
            bar.close()
            self.save_checkpoint()
            self.metrics.close()
            logger.warning(
                "interrupted at step %d; checkpoint saved, continue with --resume", self.state.step
            )
            raise
        bar.close()
        if not last_valid or config.eval_every and self.state.step % config.eval_every:
            last_valid = self.validate()
        self.save_checkpoint()
        self.metrics.close()
        return {
            "steps": self.state.step,
            "epochs": self.state.epoch,
            "valid_loss": last_valid["loss"],
            "valid_perplexity": last_valid["perplexity"],
            "best_valid_loss": self.state.best_valid_loss,
            "stopped_early": self.state.stopped_early,
            "pairs_per_s": self.pairs_done / max(1e-9, time.perf_counter() - self.started),
        }

    def _train_until_done(self, budget: Budget, bar: tqdm, total_steps: int) -> dict[str, float]:
        config = self.config
        last_valid: dict[str, float] = {}
        while not budget.done(self.state.step, self.state.epoch) and not self.state.stopped_early:
            batches = self.epoch_batches(self.state.epoch)
            for indices in batches[self.state.batch_in_epoch :]:
                chunk = [self.train_examples[i] for i in indices]
                batch = make_batch([e.source for e in chunk], [e.reply for e in chunk]).to(
                    self.device
                )
                loss = self.train_step(batch, total_steps)
                self.state.step += 1
                self.state.batch_in_epoch += 1
                self.pairs_done += batch.size
                pairs_per_s = self.pairs_done / (time.perf_counter() - self.started)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss:.3f}", pairs_s=f"{pairs_per_s:.0f}", epoch=self.state.epoch
                )
                if self.state.step % 20 == 0:
                    self.metrics.log(
                        self.state.step,
                        {
                            "train/loss": loss,
                            "train/lr": self.optimizer.param_groups[0]["lr"],
                            "train/pairs_per_s": pairs_per_s,
                        },
                    )
                if config.eval_every and self.state.step % config.eval_every == 0:
                    last_valid = self.validate()
                if self.state.step % config.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.stop_requested:
                    raise KeyboardInterrupt
                if budget.done(self.state.step, self.state.epoch) or self.state.stopped_early:
                    break
            else:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
                if not config.eval_every:
                    last_valid = self.validate()
        return last_valid


def train_cross_entropy(
    *,
    out: Path,
    corpus: Corpus | None,
    data_config: DataConfig,
    tokenizer_config: TokenizerConfig,
    model_config: ModelConfig,
    train_config: CrossEntropyConfig,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Set up (or reopen) a run directory and train; the one entry point the CLI calls.

    With ``resume`` the saved configs win over the arguments, so the run continues as it began.
    """
    run = RunDir(Path(out))
    if resume:
        saved = run.read_config()
        data_config = from_dict(DataConfig, saved["data"])
        tokenizer_config = from_dict(TokenizerConfig, saved["tokenizer"])
        model_config = from_dict(ModelConfig, saved["model"])
        train_config = from_dict(CrossEntropyConfig, saved["train"])
    elif run.exists():
        raise RunError(
            f"{run.path} already holds a run; pass --resume to continue it or pick another --out"
        )
    check_writable(run.path)
    torch_device = pick_device(device)
    if corpus is None:
        raise RunError("no corpus given")
    tokenizer = ChatTokenizer.load(run.tokenizer_path) if resume else None
    dataset = prepare_dataset(corpus, data_config, tokenizer_config, tokenizer=tokenizer)
    if not resume:
        dataset.tokenizer.save(run.tokenizer_path)
    model_config.vocab_size = dataset.tokenizer.vocab_size
    run_config = {
        "stage": "ce",
        "rlchat_version": __version__,
        "data": to_dict(data_config),
        "tokenizer": to_dict(tokenizer_config),
        "model": to_dict(model_config),
        "train": to_dict(train_config),
    }
    if not resume:
        run.write_config(run_config)
    train = dataset.splits["train"].examples
    if not train:
        raise RunError("no training pairs left after filtering; check --genre and --max-tokens")
    seed_everything(train_config.seed)
    trainer = CrossEntropyTrainer(
        run=run,
        run_config=run_config,
        tokenizer_json=dataset.tokenizer.to_json(),
        model=Seq2Seq(model_config),
        train_examples=train,
        valid_examples=dataset.splits["valid"].examples,
        config=train_config,
        device=torch_device,
        tensorboard=tensorboard,
    )
    if resume and not trainer.resume():
        logger.info("no checkpoint in %s yet; starting from the first step", run.path)
    logger.info(
        "training on %d pairs (%d validation), %d parameters, device %s",
        len(train),
        len(trainer.valid_examples),
        count_parameters(trainer.model),
        torch_device,
    )
    return trainer.fit(progress=progress)
