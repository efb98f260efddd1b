"""A trained run, ready to answer: model, tokenizer and configs loaded from a run directory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlchat.checkpoint import load_bundle, load_weights
from rlchat.config import DataConfig, DecodeConfig, ModelConfig, TokenizerConfig, from_dict
from rlchat.dataset import with_context
from rlchat.decoding import generate, generate_scored
from rlchat.model import Seq2Seq
from rlchat.rerank import (
    LogLikelihoods,
    backward_log_likelihood,
    best_of_each_input,
    candidate_config,
    candidates_per_input,
    check_rerank,
    forward_log_likelihood,
    mmi_combine,
)
from rlchat.runs import RunDir, pick_device
from rlchat.tokenizer import ChatTokenizer


def as_corpus_line(message: str) -> str:
    """A chat message in the form of the corpus lines the model learned to answer.

    99% of the corpus's inputs end in punctuation; a bare "hi" or "hello" is outside what the
    model saw, and it loops on it ("hi hi hi there hi hi"). A final full stop brings it back.
    """
    stripped = message.rstrip()
    return f"{stripped}." if stripped and stripped[-1].isalnum() else message


@dataclass
class Chatbot:
    name: str
    model: Seq2Seq
    tokenizer: ChatTokenizer
    config: dict[str, Any]
    device: torch.device
    # The reply -> input model MMI reranking asks (`rlchat.rerank`); loaded once, shared.
    backward: Chatbot | None = None
    backward_shares_vocabulary: bool = False

    @classmethod
    def load(
        cls, path: Path | str, *, device: str = "auto", backward: Path | str | None = None
    ) -> Chatbot:
        """Load a run directory (its best model) or a checkpoint bundle directly; with
        ``backward``, also the backward run that ``rerank="mmi"`` needs."""
        path = Path(path)
        bundle_path = RunDir(path).model_path() if (path / "run.json").is_file() else path
        bundle = load_bundle(bundle_path)
        torch_device = pick_device(device)
        model = Seq2Seq(from_dict(ModelConfig, bundle.config["model"]))
        load_weights(model, bundle.weights)
        model.to(torch_device).eval()
        bot = cls(
            name=path.name,
            model=model,
            tokenizer=ChatTokenizer.from_json(bundle.tokenizer_json),
            config=bundle.config,
            device=torch_device,
        )
        if backward is not None:
            bot.attach_backward(cls.load(backward, device=str(torch_device)))
        return bot

    @property
    def direction(self) -> str:
        return self.data_config.direction

    def attach_backward(self, backward: Chatbot) -> None:
        if backward.direction != "backward":
            raise ValueError(
                f"{backward.name} is not a backward model; train one with "
                "`rlchat train ce --direction backward`"
            )
        self.backward = backward
        self.backward_shares_vocabulary = backward.tokenizer.to_json() == self.tokenizer.to_json()

    @property
    def data_config(self) -> DataConfig:
        return from_dict(DataConfig, self.config.get("data", {}))

    @property
    def tokenizer_config(self) -> TokenizerConfig:
        return from_dict(TokenizerConfig, self.config.get("tokenizer", {}))

    @property
    def stage(self) -> str:
        return self.config.get("stage", "ce")

    @property
    def genres(self) -> list[str]:
        return self.data_config.genres

    def encode_input(self, message: str, history: Sequence[str] = ()) -> list[int]:
        """Input ids the way training built them: cut to max tokens, context joined by <sep>."""
        max_tokens = self.tokenizer_config.max_tokens
        # Keep the end of an over-long message: its last words are what a reply answers.
        source = self.tokenizer.encode(as_corpus_line(message))[-max_tokens:]
        turns = self.data_config.context_turns
        if turns and history:
            past = self.tokenizer.encode_batch([as_corpus_line(t) for t in history[-turns:]])
            source = with_context(source, past, turns, max_tokens)
        return source

    def reply_batch(
        self,
        messages: Sequence[str],
        histories: Sequence[Sequence[str]] | None = None,
        config: DecodeConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Replies to many messages at once: one batched decode."""
        histories = histories or [()] * len(messages)
        config = config or DecodeConfig()
        check_rerank(config, has_backward=self.backward is not None)
        sources = [self.encode_input(m, h) for m, h in zip(messages, histories, strict=True)]
        if config.rerank == "mmi":
            ids = self.mmi_reply_ids(messages, sources, config, generator)
        else:
            ids = generate(self.model, sources, config, generator=generator)
        # A byte-level model can end a reply inside a multi-byte character; show no U+FFFD.
        return [
            " ".join(text.replace("\ufffd", "").split())
            for text in self.tokenizer.decode_batch(ids)
        ]

    def mmi_reply_ids(
        self,
        messages: Sequence[str],
        sources: Sequence[Sequence[int]],
        config: DecodeConfig,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """`config.candidates` candidates per input, the best by MMI (`rlchat.rerank`)."""
        candidates, forward, backward = self.mmi_candidates(messages, sources, config, generator)
        lengths = torch.as_tensor([len(c) for c in candidates])
        scores = mmi_combine(forward, backward, lengths, config)
        return [candidates[row] for row in best_of_each_input(scores, candidates_per_input(config))]

    def mmi_candidates(
        self,
        messages: Sequence[str],
        sources: Sequence[Sequence[int]],
        config: DecodeConfig,
        generator: torch.Generator | None = None,
    ) -> tuple[list[list[int]], LogLikelihoods, LogLikelihoods]:
        """Candidates (input-major), and (sums, counts) of their forward and backward
        log-likelihoods: what any MMI setting combines (`rlchat.rerank.mmi_combine`)."""
        check_rerank(config, has_backward=self.backward is not None)
        n = candidates_per_input(config)
        decoding = candidate_config(config)
        decoded = generate_scored(self.model, sources, decoding, generator=generator, num_samples=n)
        candidates = decoded.to_lists()
        back = self.backward
        back_max = back.tokenizer_config.max_tokens
        if self.backward_shares_vocabulary:
            read_back = [c[:back_max] for c in candidates]
        else:  # another vocabulary: the backward model reads the candidates' text
            read_back = [
                ids[:back_max]
                for ids in back.tokenizer.encode_batch(self.tokenizer.decode_batch(candidates))
            ]
        # The backward model was trained to write the input line itself, without context.
        inputs = back.tokenizer.encode_batch([as_corpus_line(m) for m in messages])
        written = [ids[-back_max:] for ids in inputs for _ in range(n)]
        return (
            candidates,
            forward_log_likelihood(decoded, decoding),
            backward_log_likelihood(back.model, read_back, written),
        )

    def reply(
        self,
        message: str,
        history: Sequence[str] = (),
        config: DecodeConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> str:
        return self.reply_batch([message], [history], config, generator)[0]
