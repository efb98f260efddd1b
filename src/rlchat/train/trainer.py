"""The training loop written once: epochs of bucketed batches, budget, validation, checkpoints,
resume and Ctrl-C. Each stage (cross-entropy, SCST) supplies its step and its validation."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from rlchat.batching import bucketed_batches
from rlchat.checkpoint import (
    capture_rng,
    flatten_optimizer,
    load_bundle,
    load_weights,
    restore_rng,
    save_bundle,
    unflatten_optimizer,
)
from rlchat.config import LoopConfig
from rlchat.dataset import Example, seeded_sample
from rlchat.model import Seq2Seq
from rlchat.runs import RunDir
from rlchat.train.distributed import SINGLE, World
from rlchat.train.loop import Budget, MetricsLog, stop_on_interrupt

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_score: float = math.inf  # lower is better (a loss, or minus a reward): best/
    best_progress: float = math.inf  # what the schedule and early stopping follow
    evals_without_improvement: int = 0
    lr_scale: float = 1.0
    stopped_early: bool = False


def learning_rate(config: LoopConfig, state: TrainState, total_steps: int) -> float:
    """Linear warm-up, then constant, cosine decay, or plateau halving (via lr_scale)."""
    warmup = min(1.0, (state.step + 1) / max(1, config.warmup_steps))
    lr = config.lr * warmup * state.lr_scale
    if config.schedule == "cosine" and total_steps > 0:
        progress = min(1.0, state.step / total_steps)
        lr *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


def build_optimizer(model: torch.nn.Module, config: LoopConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


class Trainer:
    """Base trainer. Subclasses implement ``loss(examples)`` and ``evaluate()``."""

    stage = "train"

    def __init__(
        self,
        *,
        run: RunDir,
        run_config: dict[str, Any],
        tokenizer_json: str,
        model: Seq2Seq,
        train_examples: list[Example],
        valid_examples: list[Example],
        config: LoopConfig,
        device: torch.device,
        tensorboard: bool = True,
        world: World = SINGLE,
    ) -> None:
        self.world = world
        self.run = run
        self.run_config = run_config
        self.tokenizer_json = tokenizer_json
        self.model = model.to(device)
        self.net = world.wrap(self.model)  # what forward passes with gradient go through
        self.train_examples = train_examples
        kept = seeded_sample(len(valid_examples), config.max_eval_pairs, seed=config.seed)
        self.valid_examples = [valid_examples[i] for i in kept]
        self.config = config
        self.device = device
        self.optimizer = build_optimizer(self.model, config)
        self.average = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
            if config.ema_decay
            else None
        )
        self.state = TrainState()
        # Only rank 0 writes: one metrics file, one set of checkpoints.
        self.metrics = MetricsLog(run, tensorboard=tensorboard, enabled=world.is_main)
        self.lengths = [(len(e.reply), len(e.source)) for e in train_examples]
        self.batches_per_epoch = math.ceil(len(train_examples) / config.batch_size)
        self.stop_requested = False
        self.on_step: Callable[[Trainer], None] | None = None
        self.validated_at = -1  # step of the last validation
        self.validation_s = 0.0  # how long the last one took: kept free at the budget's end

    # --- what a stage supplies -------------------------------------------------------------

    def loss(self, examples: list[Example]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise on one batch and the figures to log (slash-namespaced)."""
        raise NotImplementedError

    def evaluate(self) -> tuple[float, dict[str, float]]:
        """(score, figures) on validation; lower score is better."""
        raise NotImplementedError

    def progress_score(self, score: float, figures: dict[str, float]) -> float:
        """What the plateau schedule and early stopping follow (lower is better): by default
        the score best/ is chosen by."""
        return score

    def stage_state(self) -> dict[str, Any]:
        """What else a stage must keep to resume exactly (JSON); saved in each checkpoint."""
        return {}

    def load_stage_state(self, state: dict[str, Any]) -> None:
        """Restore what `stage_state` saved."""

    # --- checkpoints -----------------------------------------------------------------------

    def bundle_config(self) -> dict[str, Any]:
        return {**self.run_config, "train_state": asdict(self.state)}

    def average_tensors(self) -> dict[str, torch.Tensor]:
        """The moving average's weights and count, for the checkpoint (none when off)."""
        if self.average is None:
            return {}
        tensors = {
            f"average.{name}": p.detach().cpu().clone()
            for name, p in self.average.module.named_parameters()
        }
        return {**tensors, "average_count": self.average.n_averaged.detach().cpu().clone()}

    def load_average(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.average is None:
            return
        if "average_count" not in tensors:
            # A checkpoint from before averaging was turned on: start the average here.
            self.average.n_averaged.zero_()
            return
        with torch.no_grad():
            for name, p in self.average.module.named_parameters():
                p.copy_(tensors[f"average.{name}"])
            self.average.n_averaged.copy_(tensors["average_count"])

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """The model holds the moving average's weights inside (the last ones when off or
        before the first step), and its own again afterwards."""
        if self.average is None or not int(self.average.n_averaged):
            yield
            return
        params = list(self.model.parameters())
        last = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, a in zip(params, self.average.module.parameters(), strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(params, last, strict=True):
                    p.copy_(saved)

    def save_checkpoint(self) -> None:
        if not self.world.is_main:
            return
        optimizer_tensors, optimizer_meta = flatten_optimizer(self.optimizer)
        rng_tensors, rng_meta = capture_rng()
        save_bundle(
            self.run.step_path(self.state.step),
            model=self.model,
            config=self.bundle_config(),
            tokenizer_json=self.tokenizer_json,
            state={
                "train": asdict(self.state),
                "optimizer": optimizer_meta,
                "rng": rng_meta,
                "stage": self.stage_state(),
            },
            state_tensors={**optimizer_tensors, **rng_tensors, **self.average_tensors()},
        )
        self.run.prune(self.config.keep_checkpoints)

    def save_best(self) -> None:
        if not self.world.is_main:
            return
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
        saved = bundle.state["train"]
        # Checkpoints from before `best_progress` followed the one score for both.
        self.state = TrainState(**{"best_progress": saved["best_score"], **saved})
        self.load_stage_state(bundle.state.get("stage", {}))
        self.load_average(bundle.state_tensors)
        restore_rng(bundle.state_tensors, bundle.state["rng"])
        self.metrics.truncate_after(self.state.step)
        logger.info("resumed from %s (step %d, epoch %d)", path, self.state.step, self.state.epoch)
        return True

    # --- the loop --------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        seed = self.config.seed * 10007 + epoch
        batches = bucketed_batches(self.lengths, self.config.batch_size, seed=seed)
        if self.world.distributed:
            # A batch smaller than the world would leave a process without pairs: fold it in.
            small = [b for b in batches if len(b) < self.world.size]
            batches = [b for b in batches if len(b) >= self.world.size]
            for b in small:
                batches[0] = batches[0] + b
        return batches

    def train_step(self, examples: list[Example], total_steps: int) -> dict[str, float]:
        lr = learning_rate(self.config, self.state, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, figures = self.loss(examples)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        return {**figures, f"{self.stage}/lr": lr}

    def validate(self) -> dict[str, float]:
        """Validation figures; tracks the best model, the plateau schedule and early stopping."""
        started = time.perf_counter()
        with self.averaged_weights():
            score, figures = self.evaluate()
            improved = score < self.state.best_score - 1e-4
            if improved:
                self.save_best()
        self.validation_s = time.perf_counter() - started
        self.validated_at = self.state.step
        if improved:
            self.state.best_score = score
        progress = self.progress_score(score, figures)
        if progress < self.state.best_progress - 1e-4:
            self.state.best_progress = progress
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
            if self.config.schedule == "plateau":
                # Halve the rate when validation stalls (a cheap, robust schedule for LSTMs).
                self.state.lr_scale *= 0.5
            patience = self.config.patience
            if patience and self.state.evals_without_improvement >= patience:
                self.state.stopped_early = True
        self.metrics.log(self.state.step, figures)
        return figures

    def fit(self, *, progress: bool = True) -> dict[str, Any]:
        """Train until the budget or early stopping; returns a summary of the run."""
        config = self.config
        budget = Budget(config.epochs, config.max_steps, config.max_minutes)
        total_steps = config.max_steps or config.epochs * self.batches_per_epoch
        bar = tqdm(
            total=total_steps,
            initial=self.state.step,
            disable=not progress or not self.world.is_main,
            unit="step",
            dynamic_ncols=True,
            desc=f"train {self.stage}",
        )
        self.pairs_done, self.started = 0, time.perf_counter()
        self.start_step = self.state.step
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
        if self.validated_at != self.state.step:
            # Stopped between validations (time, steps): judge the last weights too, so best/
            # is the better of them and the best so far, and no step is lost.
            last_valid = self.validate()
        self.save_checkpoint()
        self.metrics.close()
        return {
            "steps": self.state.step,
            "epochs": self.state.epoch,
            "valid": last_valid,
            "best_score": self.state.best_score,
            "stopped_early": self.state.stopped_early,
            "pairs_per_s": self.pairs_done / max(1e-9, time.perf_counter() - self.started),
        }

    def _fit_bar_to_time(self, bar: tqdm, budget: Budget, total_steps: int) -> None:
        """Under a time budget the bar's end is the steps that fit in it at the measured pace,
        so its "time left" is the budget's, not that of all the epochs asked for."""
        left = budget.seconds_left()
        elapsed = time.perf_counter() - self.started
        steps_done = self.state.step - self.start_step
        if bar.disable or math.isinf(left) or steps_done < 5 or elapsed <= 0:
            return
        expected = self.state.step + int(max(0.0, left) * steps_done / elapsed)
        bar.total = max(self.state.step, min(total_steps, expected))

    def _train_until_done(self, budget: Budget, bar: tqdm, total_steps: int) -> dict[str, float]:
        config = self.config
        last_valid: dict[str, float] = {}
        time_up = False
        while not (
            time_up or budget.done(self.state.step, self.state.epoch) or self.state.stopped_early
        ):
            batches = self.epoch_batches(self.state.epoch)
            for indices in batches[self.state.batch_in_epoch :]:
                self.model.train()
                # Data parallel: each process takes every world.size-th pair of the batch, so
                # every pair is seen once per epoch and a step equals one on the whole batch.
                mine = indices[self.world.rank :: self.world.size]
                figures = self.train_step([self.train_examples[i] for i in mine], total_steps)
                self.state.step += 1
                self.state.batch_in_epoch += 1
                self.pairs_done += len(indices)
                pairs_per_s = self.pairs_done / (time.perf_counter() - self.started)
                figures[f"{self.stage}/pairs_per_s"] = pairs_per_s
                bar.update(1)
                self._fit_bar_to_time(bar, budget, total_steps)
                bar.set_postfix(
                    loss=f"{figures[f'{self.stage}/loss']:.3f}",
                    pairs_s=f"{pairs_per_s:.0f}",
                    epoch=self.state.epoch,
                )
                if self.state.step % 20 == 0:
                    self.metrics.log(self.state.step, figures)
                if config.eval_every and self.state.step % config.eval_every == 0:
                    last_valid = self.validate()
                if self.state.step % config.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.on_step is not None:
                    self.on_step(self)
                if self.world.any(self.stop_requested):
                    raise KeyboardInterrupt
                time_up = self.world.any(budget.out_of_time(reserve_s=self.validation_s))
                if time_up or budget.done(self.state.step, self.state.epoch):
                    break
                if self.state.stopped_early:
                    break
            else:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
                if not config.eval_every:
                    last_valid = self.validate()
        return last_valid
