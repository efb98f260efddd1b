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
from rlchat.decoding import generate
from rlchat.model import Seq2Seq
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

    @classmethod
    def load(cls, path: Path | str, *, device: str = "auto") -> Chatbot:
        """Load a run directory (its best model) or a checkpoint bundle directly."""
        path = Path(path)
        bundle_path = RunDir(path).model_path() if (path / "run.json").is_file() else path
        bundle = load_bundle(bundle_path)
        torch_device = pick_device(device)
        model = Seq2Seq(from_dict(ModelConfig, bundle.config["model"]))
        load_weights(model, bundle.weights)
        model.to(torch_device).eval()
        return cls(
            name=path.name,
            model=model,
            tokenizer=ChatTokenizer.from_json(bundle.tokenizer_json),
            config=bundle.config,
            device=torch_device,
        )

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
        sources = [self.encode_input(m, h) for m, h in zip(messages, histories, strict=True)]
        ids = generate(self.model, sources, config or DecodeConfig(), generator=generator)
        # A byte-level model can end a reply inside a multi-byte character; show no U+FFFD.
        return [
            " ".join(text.replace("\ufffd", "").split())
            for text in self.tokenizer.decode_batch(ids)
        ]

    def reply(
        self,
        message: str,
        history: Sequence[str] = (),
        config: DecodeConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> str:
        return self.reply_batch([message], [history], config, generator)[0]
