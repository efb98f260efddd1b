"""Self-critical sequence training (SCST) for the chatbot.

Rennie et al., "Self-critical Sequence Training for Image Captioning", 2016,
https://arxiv.org/abs/1612.00563: REINFORCE (Williams 1992) whose baseline is the reward of
the model's own greedy reply, so only samples that beat what the model would say anyway are
reinforced. Rewards follow Li et al. 2016, https://arxiv.org/abs/1606.01541.

One step, all batched: greedy replies and K samples per input are decoded without gradient,
scored, then one teacher-forced pass over the samples gives their log-probs with gradient.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rlchat import __version__
from rlchat.batching import Batch, encode_inputs, make_batch
from rlchat.checkpoint import load_bundle, load_weights
from rlchat.config import (
    DataConfig,
    DecodeConfig,
    ModelConfig,
    RLConfig,
    TokenizerConfig,
    from_dict,
    to_dict,
)
from rlchat.corpus import Corpus
from rlchat.dataset import Example, prepare_dataset
from rlchat.decoding import DecodeResult, SelfCriticalSampling, decode
from rlchat.decoding.base import length_mask
from rlchat.metrics import commonest_share
from rlchat.model import Seq2Seq, dropout_disabled
from rlchat.rewards import RewardFunction, parse_reward_spec, word_bleu2
from rlchat.runs import RunDir, RunError, autocast, pick_device
from rlchat.text import stock_replies
from rlchat.tokenizer import BOS_ID, ChatTokenizer
from rlchat.train.cross_entropy import logits_loss
from rlchat.train.distributed import device_for, init_world
from rlchat.train.loop import check_writable, seed_everything
from rlchat.train.trainer import Trainer

logger = logging.getLogger(__name__)

References = dict[tuple[int, ...], list[list[int]]]


def collect_references(examples: list[Example]) -> References:
    """All replies of each distinct input: a source said several times has several answers."""
    references: References = defaultdict(list)
    for example in examples:
        references[tuple(example.source)].append(example.reply)
    return dict(references)


def sampling_log_probs(
    logits: torch.Tensor, positions: torch.Tensor, config: DecodeConfig
) -> torch.Tensor:
    """Log-probs (N, V) of the distribution the sampler drew from, at each reply position (N,).

    The sampler sees the model's logits at ``config.temperature`` after `length_mask`, so the
    same mask applies here. Without it a reply cut at the length cap is scored with the
    log-prob of an <eos> the policy never chose (the sampler forced it), hundreds of nats in
    a peaked policy, and one such sample swamps the whole gradient.
    """
    V = logits.size(-1)
    masks = torch.stack(
        [length_mask(t, config, V, logits.device) for t in range(config.max_tokens + 1)]
    )  # (L, V), one row per reply position
    return torch.log_softmax(
        (logits / config.temperature).masked_fill(masks[positions], float("-inf")), dim=-1
    )


def sample_log_probs(
    model: torch.nn.Module,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    samples: DecodeResult,
    k: int,
    config: DecodeConfig,
    with_entropy_grad: bool = True,
    references: Batch | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs with gradient of K sampled replies per input, from one encoder pass; with
    ``references`` (a batch of one reference per input), their logits from the same pass.

    ``model`` is the Seq2Seq or its DistributedDataParallel wrapper; ``config`` the sampling
    configuration that drew the samples. Returns per-sample summed log-prob (R,), per-sample
    token count (R,), and the mean entropy of the policy over the sampled positions (scalar).
    R = B * K, input-major.
    """
    tokens, lengths = samples.tokens, samples.lengths  # (R, L), (R,)
    bos = torch.full_like(tokens[:, :1], BOS_ID)
    tgt_in = torch.cat([bos, tokens[:, :-1]], dim=1)  # (R, L)
    mask = torch.arange(tokens.size(1), device=tokens.device) < lengths.unsqueeze(1)  # (R, L)
    if references is None:
        logits, reference_logits = model(src, src_lengths, tgt_in, mask, repeat=k), None
    else:
        logits, reference_logits = model(
            src, src_lengths, tgt_in, mask, repeat=k, also=(references.tgt_in, references.tgt_mask)
        )
    logits = logits.float()  # (N, V)
    row_of_token, positions = mask.nonzero().unbind(1)  # (N,) each, row-major like the logits
    # REINFORCE needs the log-probs of the distribution that drew the samples: the tempered,
    # constrained one. Its argmax is the model's, so the greedy baseline is the same at any T.
    log_probs = sampling_log_probs(logits, positions, config)
    token_log_probs = log_probs.gather(1, tokens[mask].unsqueeze(1)).squeeze(1)  # (N,)
    sequence = torch.zeros(tokens.size(0), device=tokens.device).index_add(
        0, row_of_token, token_log_probs
    )  # (R,)
    # p log p is 0 where p is 0 (a blocked token), not 0 * -inf. Only an entropy bonus needs
    # its gradient; as a logged figure it is computed outside the graph.
    with contextlib.nullcontext() if with_entropy_grad else torch.no_grad():
        probs = log_probs.exp()
        entropy = -torch.special.xlogy(probs, probs).sum(-1).mean()
    return sequence, lengths.float(), entropy, reference_logits


class SCSTTrainer(Trainer):
    """REINFORCE with a self-critical (greedy) or leave-one-out baseline."""

    stage = "rl"
    config: RLConfig

    def __init__(self, *, reward: RewardFunction, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reward = reward
        # Validation BLEU in words, like evaluation, when the reward knows the tokenizer.
        self.tokenizer = getattr(reward, "tokenizer", None)
        self.train_references = collect_references(self.train_examples)
        self.valid_references = collect_references(self.valid_examples)
        self.greedy = DecodeConfig(
            strategy="greedy", max_tokens=self.config.max_tokens, no_repeat_ngram=0
        )
        # Pure samples from the policy (no repeat blocking): the log-probs scored below must
        # be those of the distribution that produced the samples.
        self.sampling = DecodeConfig(
            strategy="sample",
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            no_repeat_ngram=0,
        )

    def loss(self, examples: list[Example]) -> tuple[torch.Tensor, dict[str, float]]:
        config, model, k = self.config, self.model, self.config.samples
        # Dropout off: the policy that samples must be the policy whose log-probs are scored.
        model.eval()
        sources = [e.source for e in examples]
        references = [self.train_references[tuple(s)] for s in sources]
        src, src_lengths = (t.to(self.device) for t in encode_inputs(sources))
        with torch.no_grad(), autocast(self.device):
            # One pass decodes the greedy baseline and the K samples of every input.
            both = decode(
                model,
                src,
                src_lengths,
                self.sampling,
                strategy=SelfCriticalSampling(self.sampling, k),
            )
        rows = torch.arange(both.tokens.size(0), device=both.tokens.device).view(-1, k + 1)
        greedy, samples = both.select(rows[:, 0]), both.select(rows[:, 1:].reshape(-1))
        sample_lists, greedy_lists = samples.to_lists(), greedy.to_lists()
        # A sample equal to its greedy reply has advantage 0 and teaches nothing: when most
        # are, the policy has collapsed onto its mode (or the temperature is too low).
        same_as_greedy = sum(
            sample == greedy_lists[i // k] for i, sample in enumerate(sample_lists)
        ) / max(1, len(sample_lists))
        # One reward call scores the samples and the greedy replies (B * K + B rows).
        rewards, parts = self.reward(
            sample_lists + greedy_lists,
            [s for s in sources for _ in range(k)] + sources,
            [r for r in references for _ in range(k)] + references,
        )
        rewards = rewards.to(self.device)
        sample_reward = rewards[: -len(sources)].view(-1, k)  # (B, K)
        greedy_reward = rewards[-len(sources) :]  # (B,)
        greedy_parts = {name: values[-len(sources) :] for name, values in parts.items()}
        parts = {name: values[: -len(sources)] for name, values in parts.items()}

        if config.baseline == "greedy":
            # SCST: the greedy reply's reward is the baseline (Rennie et al. eq. 8).
            baseline = greedy_reward.unsqueeze(1).expand_as(sample_reward)
        else:
            # Leave-one-out: the mean reward of the other K-1 samples of the same input.
            baseline = (sample_reward.sum(1, keepdim=True) - sample_reward) / max(1, k - 1)
        advantage = sample_reward - baseline  # (B, K)
        if config.skip_solved and "bleu" in greedy_parts:
            # As the textbook did: inputs whose greedy reply already matches are left alone.
            solved = greedy_parts["bleu"].to(self.device) >= 1.0 - 1e-9
            advantage = advantage.masked_fill(solved.unsqueeze(1), 0.0)

        # The references' cross-entropy (the mixed objective) is scored from the same encoder
        # pass as the samples, so without dropout too.
        reference_batch = (
            make_batch(sources, [e.reply for e in examples]).to(self.device)
            if config.ce_weight
            else None
        )
        with dropout_disabled(model), autocast(self.device):
            log_prob, lengths, entropy, reference_logits = sample_log_probs(
                self.net,
                src,
                src_lengths,
                samples,
                k,
                self.sampling,
                with_entropy_grad=bool(config.entropy_bonus),
                references=reference_batch,
            )
        if config.length_normalise:
            log_prob = log_prob / lengths
        # REINFORCE: minimise -A * log p(sample); the advantage carries no gradient. Averaged
        # over the samples of all processes, so data-parallel steps equal one big step.
        rows = self.world.sum(float(log_prob.numel()))
        loss = -(advantage.detach().reshape(-1) * log_prob).sum() * self.world.size / rows
        figures: dict[str, float] = {}
        if config.entropy_bonus:
            loss = loss - config.entropy_bonus * entropy
        if reference_batch is not None:
            # Mixed objective: cross-entropy on the references keeps the language from drifting.
            ce = logits_loss(reference_logits, reference_batch, world=self.world)
            loss = loss + config.ce_weight * ce
            figures["rl/ce_loss"] = ce.item()
        figures |= {
            "rl/loss": loss.item(),
            "rl/reward_sample": sample_reward.mean().item(),
            "rl/reward_greedy": greedy_reward.mean().item(),
            "rl/advantage_abs": advantage.abs().mean().item(),
            "rl/entropy": entropy.item(),
            "rl/samples_equal_greedy": same_as_greedy,
            "rl/sample_length": lengths.mean().item(),
            **{f"reward/{name}": values.mean().item() for name, values in parts.items()},
        }
        return loss, figures

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict[str, float]]:
        """Greedy replies on validation; the score (lower is better) is minus the figure that
        ``select_by`` names: BLEU-2 by default, not the reward the run maximises."""
        self.model.eval()
        rewards, bleus, parts_sum = [], [], defaultdict(float)
        all_replies: list[list[int]] = []
        for start in range(0, len(self.valid_examples), 256):
            chunk = self.valid_examples[start : start + 256]
            sources = [e.source for e in chunk]
            references = [self.valid_references[tuple(s)] for s in sources]
            src, src_lengths = (t.to(self.device) for t in encode_inputs(sources))
            with autocast(self.device):
                replies = decode(self.model, src, src_lengths, self.greedy).to_lists()
            reward, parts = self.reward(replies, sources, references)
            rewards.append(reward)
            all_replies.extend(replies)
            bleus.extend(word_bleu2(replies, references, self.tokenizer))
            for name, values in parts.items():
                parts_sum[name] += float(values.sum())
        n = max(1, len(self.valid_examples))
        mean_reward = float(torch.cat(rewards).mean()) if rewards else 0.0
        figures = {
            "valid/reward": mean_reward,
            "valid/bleu2": math.fsum(bleus) / n,
            "valid/top1": commonest_share(all_replies),
            **{f"valid/reward_{name}": total / n for name, total in parts_sum.items()},
        }
        chosen = figures["valid/bleu2"] if self.config.select_by == "bleu2" else mean_reward
        return -chosen, figures


def load_policy(init: Path, device: torch.device) -> tuple[Seq2Seq, dict[str, Any], str]:
    """A CE run's best model, its bundle config and tokenizer JSON."""
    bundle = load_bundle(RunDir(init).model_path())
    model = Seq2Seq(from_dict(ModelConfig, bundle.config["model"]))
    load_weights(model, bundle.weights)
    return model.to(device), bundle.config, bundle.tokenizer_json


def load_backward(path: str, tokenizer_json: str, device: torch.device) -> Seq2Seq | None:
    """The frozen backward model the ``mutual`` reward asks, on the policy's vocabulary."""
    if not path:
        return None
    model, config, backward_tokenizer = load_policy(Path(path), device)
    if config.get("data", {}).get("direction") != "backward":
        raise RunError(f"--backward {path} is not a backward run (train ce --direction backward)")
    if backward_tokenizer != tokenizer_json:
        raise RunError(
            f"--backward {path} has another vocabulary than the policy; fine-tune it from the "
            "same pretrained run (train ce --init RUN --direction backward)"
        )
    return model.eval().requires_grad_(False)


def train_rl(
    *,
    init: Path | None,
    out: Path,
    corpus: Corpus,
    rl_config: RLConfig,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Start RL from a CE run (``init``) or resume an RL run; the data split is the CE run's."""
    run = RunDir(Path(out))
    if resume:
        saved = run.read_config()
        init = Path(saved["init"])
        rl_config = from_dict(RLConfig, saved["rl"])
    elif run.exists():
        raise RunError(f"{run.path} already holds a run; pass --resume or pick another --out")
    if init is None:
        raise RunError("--init RUN (a cross-entropy run) is required")
    parse_reward_spec(rl_config.reward)  # a bad spec fails before any work
    torch_device = pick_device(device)
    world = init_world(torch_device)
    torch_device = device_for(world, torch_device)
    if world.is_main:
        check_writable(run.path)
    world.barrier()  # every process has seen the directory before rank 0 writes to it
    policy, ce_config, tokenizer_json = load_policy(init, torch_device)
    tokenizer = ChatTokenizer.from_json(tokenizer_json)
    data_config = from_dict(DataConfig, ce_config["data"])
    if data_config.direction != "forward":
        raise RunError(f"{init} is a backward model (reply -> input); RL starts from a forward one")
    tokenizer_config = from_dict(TokenizerConfig, ce_config["tokenizer"])
    dataset = prepare_dataset(corpus, data_config, tokenizer_config, tokenizer=tokenizer)
    run_config = {
        "stage": "rl",
        "rlchat_version": __version__,
        "init": str(init),
        "data": to_dict(data_config),
        "tokenizer": to_dict(tokenizer_config),
        "model": ce_config["model"],
        "rl": to_dict(rl_config),
    }
    if not resume and world.is_main:
        run.write_config(run_config)
        tokenizer.save(run.tokenizer_path)
    # The frozen CE model judges dullness and coherence; the policy must not grade itself.
    judge = copy.deepcopy(policy).eval().requires_grad_(False)
    reward = RewardFunction.from_spec(
        rl_config.reward,
        judge=judge,
        tokenizer=tokenizer,
        device=torch_device,
        stock=stock_replies(e.pair.reply for e in dataset.splits["train"].examples),
        backward=load_backward(rl_config.backward, tokenizer_json, torch_device),
    )
    seed_everything(rl_config.seed)
    trainer = SCSTTrainer(
        reward=reward,
        run=run,
        run_config=run_config,
        tokenizer_json=tokenizer_json,
        model=policy,
        train_examples=dataset.splits["train"].examples,
        valid_examples=dataset.splits["valid"].examples,
        config=replace(rl_config),
        device=torch_device,
        tensorboard=tensorboard,
        world=world,
    )
    if resume and not trainer.resume():
        logger.info("no checkpoint in %s yet; starting from the CE weights", run.path)
    if not resume or trainer.state.step == 0:
        # The CE start is the first point of every curve and the model to beat.
        trainer.validate()
    return trainer.fit(progress=progress)
