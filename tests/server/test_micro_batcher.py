"""The micro-batcher, driven with a fake decode that records what it was given."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest

from rlchat.config import DecodeConfig
from rlchat.server.batching import MicroBatcher, Overloaded
from rlchat.server.registry import ModelRegistry, ServedModel

GREEDY = DecodeConfig()


class RecordingDecode:
    """Echoes messages; remembers each call's batch and can be held until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], DecodeConfig]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, messages, histories, config):  # noqa: ANN001, ANN204
        self.release.wait(5)
        self.calls.append((list(messages), config))
        if "boom" in messages:
            raise RuntimeError("decode failed")
        return [f"re: {m} ({len(h)})" for m, h in zip(messages, histories, strict=True)]


def run_with(decode: RecordingDecode, scenario, **options):  # noqa: ANN001, ANN201
    """Start a batcher, run ``scenario(batcher)`` on an event loop, stop it."""
    settings = {"name": "test", "wait_ms": 50, "max_batch": 64, "max_queue": 100} | options

    async def main():  # noqa: ANN202
        batcher = MicroBatcher(decode, **settings)
        await batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_are_decoded_as_one_batch():
    decode = RecordingDecode()

    async def scenario(batcher):  # noqa: ANN001, ANN202
        return await asyncio.gather(*(batcher.submit(f"m{i}", ["a"], GREEDY) for i in range(10)))

    assert run_with(decode, scenario) == [f"re: m{i} (1)" for i in range(10)]
    assert [len(messages) for messages, _ in decode.calls] == [10]


def test_a_batch_never_exceeds_max_batch():
    decode = RecordingDecode()

    async def scenario(batcher):  # noqa: ANN001, ANN202
        await asyncio.gather(*(batcher.submit(f"m{i}", [], GREEDY) for i in range(10)))

    run_with(decode, scenario, max_batch=4)
    assert [len(messages) for messages, _ in decode.calls] == [4, 4, 2]


def test_no_wait_and_batches_of_one_switch_batching_off():
    decode = RecordingDecode()

    async def scenario(batcher):  # noqa: ANN001, ANN202
        await asyncio.gather(*(batcher.submit(f"m{i}", [], GREEDY) for i in range(5)))

    run_with(decode, scenario, wait_ms=0, max_batch=1)
    assert [len(messages) for messages, _ in decode.calls] == [1] * 5


def test_different_decoding_settings_are_decoded_apart():
    decode = RecordingDecode()
    beam = replace(GREEDY, strategy="beam", beam_size=3)

    async def scenario(batcher):  # noqa: ANN001, ANN202
        configs = [GREEDY, beam, GREEDY, beam, replace(GREEDY)]
        return await asyncio.gather(
            *(batcher.submit(f"m{i}", [], c) for i, c in enumerate(configs))
        )

    assert run_with(decode, scenario) == [f"re: m{i} (0)" for i in range(5)]
    assert [(messages, config) for messages, config in decode.calls] == [
        (["m0", "m2", "m4"], GREEDY),
        (["m1", "m3"], beam),
    ]


def test_a_failed_decode_fails_its_requests_and_the_batcher_carries_on():
    decode = RecordingDecode()

    async def scenario(batcher):  # noqa: ANN001, ANN202
        failed = await asyncio.gather(
            batcher.submit("boom", [], GREEDY),
            batcher.submit("fine", [], GREEDY),
            return_exceptions=True,
        )
        return failed, await batcher.submit("again", [], GREEDY)

    failed, later = run_with(decode, scenario)
    assert all(isinstance(f, RuntimeError) for f in failed)
    assert later == "re: again (0)"


def test_a_full_queue_is_refused_at_once():
    decode = RecordingDecode()
    decode.release.clear()  # the first batch blocks in the decode thread

    async def scenario(batcher):  # noqa: ANN001, ANN202
        first = asyncio.ensure_future(batcher.submit("first", [], GREEDY))
        await asyncio.sleep(0.05)  # gathered and being decoded; the queue is empty again
        waiting = [asyncio.ensure_future(batcher.submit(f"w{i}", [], GREEDY)) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.submit("one too many", [], GREEDY)
        decode.release.set()
        return await asyncio.gather(first, *waiting)

    assert run_with(decode, scenario, wait_ms=0, max_queue=2) == [
        "re: first (0)",
        "re: w0 (0)",
        "re: w1 (0)",
    ]


def test_a_request_whose_client_left_is_not_decoded():
    decode = RecordingDecode()
    decode.release.clear()

    async def scenario(batcher):  # noqa: ANN001, ANN202
        first = asyncio.ensure_future(batcher.submit("first", [], GREEDY))
        await asyncio.sleep(0.05)  # being decoded; the next two queue behind it
        gone = asyncio.ensure_future(batcher.submit("gone", [], GREEDY))
        kept = asyncio.ensure_future(batcher.submit("kept", [], GREEDY))
        await asyncio.sleep(0)
        gone.cancel()
        decode.release.set()
        await first
        return await kept

    assert run_with(decode, scenario) == "re: kept (0)"
    assert [messages for messages, _ in decode.calls] == [["first"], ["kept"]]


def test_a_lone_request_to_an_idle_model_does_not_wait():
    decode = RecordingDecode()

    async def scenario(batcher):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        await batcher.submit("alone", [], GREEDY)
        return time.perf_counter() - started

    assert run_with(decode, scenario, wait_ms=5000) < 1.0


def test_under_load_the_batcher_waits_for_company():
    decode = RecordingDecode()

    async def scenario(batcher):  # noqa: ANN001, ANN202
        await asyncio.gather(*(batcher.submit(f"m{i}", [], GREEDY) for i in range(3)))
        early = asyncio.ensure_future(batcher.submit("early", [], GREEDY))
        await asyncio.sleep(0.05)
        return await asyncio.gather(early, batcher.submit("late", [], GREEDY))

    run_with(decode, scenario, wait_ms=1000)
    assert [messages for messages, _ in decode.calls][1:] == [["early", "late"]]


def test_a_batcher_that_is_not_running_refuses_and_is_not_ready():
    batcher = MicroBatcher(RecordingDecode(), name="idle", wait_ms=0, max_batch=1, max_queue=1)
    with pytest.raises(Overloaded):
        asyncio.run(batcher.submit("hi", [], GREEDY))
    model = ServedModel("idle", bot=None, batcher=batcher, evaluation=None)  # type: ignore[arg-type]
    assert not ModelRegistry([model]).ready
