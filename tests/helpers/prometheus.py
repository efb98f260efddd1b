"""Read `/metrics` the way Prometheus does: parsed, not matched as text (label order and number
formatting are the library's business)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly these labels; 0 when absent (a series not yet seen)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)
