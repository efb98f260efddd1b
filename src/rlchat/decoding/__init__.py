"""Greedy, sampling and beam decoding: one strategy interface, one driving loop."""

from rlchat.decoding.base import DecodeResult, DecodeStrategy
from rlchat.decoding.beam import BeamSearch
from rlchat.decoding.greedy import GreedySearch
from rlchat.decoding.loop import decode, generate, generate_scored, make_strategy
from rlchat.decoding.sampling import Sampling, SelfCriticalSampling

__all__ = [
    "BeamSearch",
    "DecodeResult",
    "DecodeStrategy",
    "GreedySearch",
    "Sampling",
    "SelfCriticalSampling",
    "decode",
    "generate",
    "generate_scored",
    "make_strategy",
]
