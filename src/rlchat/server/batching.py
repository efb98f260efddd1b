"""Micro-batching: concurrent requests to one model decoded as one batch.

A decode step of an LSTM costs nearly the same for one row as for thirty, so under load the
server answers many requests for the price of one by gathering them for a few milliseconds.
One background task per model gathers; one worker thread per model decodes (torch releases
the GIL, so the event loop keeps accepting requests meanwhile, and those form the next batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass

from rlchat.config import DecodeConfig

logger = logging.getLogger(__name__)

DecodeBatch = Callable[[list[str], list[Sequence[str]], DecodeConfig], list[str]]


class Overloaded(RuntimeError):
    """More requests wait for a model than the server queues; the client should retry."""


@dataclass
class _Request:
    message: str
    history: Sequence[str]
    config: DecodeConfig
    reply: asyncio.Future[str]


class MicroBatcher:
    """Gathers requests for up to ``wait_ms`` (or until ``max_batch``), then decodes them.

    The wait applies under load only: when requests queued behind the last decode, or the
    last batch held several. A lone request to an idle model is decoded at once.

    Requests with different decoding settings cannot share a decode, so a gathered batch is
    split by settings; each group is one ``decode_batch(messages, histories, config)`` call.
    ``wait_ms=0`` with ``max_batch=1`` decodes every request alone (batching off).
    """

    def __init__(
        self,
        decode_batch: DecodeBatch,
        *,
        name: str,
        wait_ms: float,
        max_batch: int,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.decode_batch = decode_batch
        self.name = name
        self.wait_s = wait_ms / 1000
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{self.name}")
        self._task = asyncio.create_task(self._serve(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue is not None and not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.reply.done():
                request.reply.set_exception(Overloaded("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, message: str, history: Sequence[str], config: DecodeConfig) -> str:
        """The reply to one message, decoded with whatever other requests arrive meanwhile."""
        if self._queue is None or not self.running:
            raise Overloaded(f"model {self.name} is not running")
        reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Request(message, history, config, reply))
        except asyncio.QueueFull:
            raise Overloaded(f"model {self.name} has {self.max_queue} requests waiting") from None
        return await reply

    async def _serve(self) -> None:
        assert self._queue is not None
        loaded = False
        while True:
            batch = await self._gather(wait=loaded)
            # Requests whose client went away while waiting need no decode.
            live = [r for r in batch if not r.reply.done()]
            for config, group in _by_settings(live):
                await self._decode(config, group)
            # Waiting only pays under load: requests queued behind this decode, or it held
            # several. A request that finds the model idle has no company coming.
            loaded = len(batch) > 1 or not self._queue.empty()

    async def _gather(self, *, wait: bool) -> list[_Request]:
        """The first request, everything queued behind it, and (if ``wait``) what arrives
        within ``wait_s``; at most ``max_batch``."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.wait_s if wait else 0.0)
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _decode(self, config: DecodeConfig, group: list[_Request]) -> None:
        messages = [r.message for r in group]
        histories = [r.history for r in group]
        loop = asyncio.get_running_loop()
        try:
            replies = await loop.run_in_executor(
                self._executor, self.decode_batch, messages, histories, config
            )
        except Exception as error:  # a failed decode fails its requests, not the batcher
            logger.exception("decoding a batch of %d for %s failed", len(group), self.name)
            for request in group:
                if not request.reply.done():
                    request.reply.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(group))
        for request, reply in zip(group, replies, strict=True):
            if not request.reply.done():
                request.reply.set_result(reply)


def _by_settings(batch: list[_Request]) -> list[tuple[DecodeConfig, list[_Request]]]:
    """Requests grouped by identical decoding settings, in arrival order."""
    groups: dict[tuple, list[_Request]] = {}
    for request in batch:
        groups.setdefault(astuple(request.config), []).append(request)
    return [(group[0].config, group) for group in groups.values()]
