"""The served models: loaded once, each with its micro-batcher, and picked by name or genre."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlchat.chatbot import Chatbot
from rlchat.config import DecodeConfig
from rlchat.server.batching import MicroBatcher
from rlchat.server.metrics import Metrics
from rlchat.server.settings import ServerSettings

logger = logging.getLogger(__name__)

EVAL_FILE = "eval.json"


class UnknownChoice(ValueError):
    """A model or genre the server does not serve; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class ServedModel:
    name: str
    bot: Chatbot
    batcher: MicroBatcher
    evaluation: dict[str, Any] | None

    @property
    def genres(self) -> list[str]:
        return self.bot.genres

    @property
    def context_turns(self) -> int:
        return self.bot.data_config.context_turns

    async def reply(self, message: str, history: Sequence[str], config: DecodeConfig) -> str:
        return await self.batcher.submit(message, history, config)


class ModelRegistry:
    """Models in command-line order; the first is the default."""

    def __init__(self, models: Sequence[ServedModel], decoding: DecodeConfig | None = None) -> None:
        if not models:
            raise ValueError("the server needs at least one run directory")
        self.models = {m.name: m for m in models}
        self.default = models[0]
        self.decoding = decoding or DecodeConfig()  # what requests leave out comes from here

    @property
    def genres(self) -> list[str]:
        return sorted({g for m in self.models.values() for g in m.genres})

    @property
    def ready(self) -> bool:
        return all(m.batcher.running for m in self.models.values())

    def pick(self, *, model: str | None = None, genre: str | None = None) -> ServedModel:
        """The named model, else the one trained on ``genre``, else the default."""
        if model is not None:
            chosen = self.models.get(model)
            if chosen is None:
                raise UnknownChoice("model", f"unknown model {model!r}; serving {self._names()}")
            if genre is not None and chosen.genres and genre not in chosen.genres:
                raise UnknownChoice("genre", f"no model {model!r} trained on genre {genre!r}")
            return chosen
        if genre is None:
            return self.default
        chosen = self.for_genre(genre)
        if chosen is None:
            served = ", ".join(self.genres) or "none"
            raise UnknownChoice("genre", f"unknown genre {genre!r}; genres served: {served}")
        return chosen

    def for_genre(self, genre: str) -> ServedModel | None:
        """A model trained on ``genre``: the default if it is one, else RL before CE, a
        specialist before a model of several genres, then command-line order."""
        candidates = [m for m in self.models.values() if genre in m.genres]
        if not candidates:
            return None
        if self.default in candidates:
            return self.default
        return min(candidates, key=lambda m: (m.bot.stage != "rl", len(m.genres)))

    def _names(self) -> str:
        return ", ".join(self.models)

    async def start(self) -> None:
        for model in self.models.values():
            await model.batcher.start()

    async def stop(self) -> None:
        for model in self.models.values():
            await model.batcher.stop()


def load_models(settings: ServerSettings, metrics: Metrics) -> ModelRegistry:
    """Load every run once; names are the directory names, made unique with the parent's."""
    decoding = settings.default_decoding  # a bad default fails before any model is loaded
    models = []
    backward = None
    if settings.backward is not None:
        backward = Chatbot.load(settings.backward, device=settings.device)
        logger.info("loaded backward model %s for MMI reranking", backward.name)
    for run in settings.runs:
        bot = Chatbot.load(run, device=settings.device)
        if backward is not None:
            bot.attach_backward(backward)
        name = bot.name if all(m.name != bot.name for m in models) else _qualified(run)
        bot.name = name
        batcher = MicroBatcher(
            bot.reply_batch,
            name=name,
            wait_ms=settings.batch_wait_ms,
            max_batch=settings.batch_limit,
            max_queue=settings.max_queue,
            on_batch=lambda size, name=name: metrics.observe_batch(name, size),
        )
        models.append(ServedModel(name, bot, batcher, evaluation_figures(run, name)))
        logger.info(
            "loaded %s (%s, genres: %s) on %s",
            name,
            bot.stage,
            ", ".join(bot.genres) or "all",
            bot.device,
        )
    return ModelRegistry(models, decoding)


def _qualified(run: Path) -> str:
    run = Path(run).resolve()
    return f"{run.parent.name}-{run.name}"


def evaluation_figures(run: Path, name: str) -> dict[str, Any] | None:
    """Metrics of this run from ``rlchat eval --out``'s JSON (which lists runs by directory
    name), in the run directory or beside it as the quickstart writes it."""
    for path in (run / EVAL_FILE, run.parent / EVAL_FILE):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for entry in result.get("runs", []) if isinstance(result, dict) else []:
            if isinstance(entry, dict) and entry.get("name") in (run.name, name):
                return entry.get("metrics")
    return None
