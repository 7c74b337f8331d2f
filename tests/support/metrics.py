"""What a service's Prometheus endpoint (METRICS_PORT) says, as numbers a test can compare."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

#: Samples by metric name and sorted labels.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(process_env: Mapping[str, str]) -> Samples:
    """Every sample the /metrics of a service started with ``process_env`` (its METRICS_PORT) serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{process_env['METRICS_PORT']}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
