"""Tracing is off unless an exporter is named, and off it costs nothing: no SDK, no interceptor, no import.

The end-to-end check of tracing on (one job's spans from every process in one trace) is
tests/e2e/test_tracing.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobqueue.runtime import tracing
from jobqueue.runtime.settings import ServiceSettings, SettingsError, load

ROOT = Path(__file__).resolve().parents[2]

#: Run in a fresh interpreter, so that no other test's import of OpenTelemetry can hide one made here.
OFF = textwrap.dedent(
    """
    import asyncio, sys
    from jobqueue.runtime import service, tracing
    from jobqueue.runtime.health import HealthServicer
    from jobqueue.runtime.server import build_server
    from jobqueue.runtime.settings import ServiceSettings, load
    from jobqueue.worker.reports import open_channel

    async def main() -> None:
        settings = load(ServiceSettings)  # the environment: no OTEL_* variable, or one saying off
        assert not tracing.setup(
            "job_svc",
            settings.otel_traces_exporter,
            otlp_protocol=settings.otel_exporter_otlp_protocol,
            sdk_disabled=settings.otel_sdk_disabled,
        )
        server, _ = build_server(
            host="127.0.0.1", port=0, service_names=[], register=lambda s: None, health_servicer=HealthServicer()
        )
        await server.start()
        channel = open_channel("127.0.0.1:1")
        # grpc.aio keeps a channel's interceptors by kind; with none given, every list is empty.
        assert not channel._unary_unary_interceptors, channel._unary_unary_interceptors
        with tracing.job_span("process", "t", "id"), tracing.batch_span("b", iter([None])), tracing.untraced():
            assert tracing.capture() is None and tracing.current() is None
        headers = {}
        assert tracing.start_publish('{"traceparent": "x"}', "q", {}, headers) is None and headers == {}
        await channel.close()
        await server.stop(None)
        tracing.shutdown()

    asyncio.run(main())
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
    assert not loaded, loaded
    from opentelemetry import trace
    print(type(trace.get_tracer_provider()).__name__)
    """
)


@pytest.mark.parametrize(
    "environment",
    [{}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}],
    ids=["unset", "none", "sdk-disabled"],
)
def test_off_installs_no_tracer_provider_adds_no_interceptor_and_imports_nothing(environment: dict[str, str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'gen'}:{ROOT}", **environment}
    done = subprocess.run(
        [sys.executable, "-c", OFF], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # The API's placeholder, which hands out no-op tracers: no SDK was set up.
    assert done.stdout.strip() == "ProxyTracerProvider"


def test_the_exporters_are_those_named_unless_the_sdk_is_disabled() -> None:
    assert tracing.exporter_names("", sdk_disabled=False) == []
    assert tracing.exporter_names(" none ", sdk_disabled=False) == []
    assert tracing.exporter_names("otlp", sdk_disabled=False) == ["otlp"]
    assert tracing.exporter_names("OTLP, console", sdk_disabled=False) == ["otlp", "console"]
    assert tracing.exporter_names("otlp", sdk_disabled=True) == []


def test_the_settings_read_opentelemetrys_own_variables() -> None:
    settings = load(
        ServiceSettings,
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SDK_DISABLED": "false"},
    )
    assert (settings.otel_traces_exporter, settings.otel_exporter_otlp_protocol, settings.otel_sdk_disabled) == (
        "otlp",
        "grpc",
        False,
    )
    assert load(ServiceSettings, {}).otel_traces_exporter == ""


@pytest.mark.parametrize(("exporter", "protocol"), [("zipkin_thrift", "grpc"), ("otlp", "http/json")])
def test_an_exporter_that_is_not_installed_refuses_to_start(exporter: str, protocol: str) -> None:
    with pytest.raises(SettingsError, match="no installed package provides"):
        tracing.setup("job_svc", exporter, otlp_protocol=protocol)
    assert not tracing.enabled()


def test_a_batch_span_off_does_not_read_its_contexts() -> None:
    read = []

    def contexts() -> Iterator[None]:
        read.append(True)
        yield None

    with tracing.batch_span("UpdateJobs batch", contexts()):
        pass
    assert not read


UNREACHABLE = textwrap.dedent(
    """
    import time
    from opentelemetry import trace
    from jobqueue.runtime import tracing

    assert tracing.setup("job_svc", "otlp")
    with trace.get_tracer("test").start_as_current_span("a span to export"):
        pass
    time.sleep(0.5)  # the export has begun, and retries
    began = time.monotonic()
    tracing.shutdown()
    print(round(time.monotonic() - began, 1))
    """
)


def test_a_stop_waits_for_an_unreachable_collector_only_so_long() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT / 'gen'}:{ROOT}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",  # discard: nothing listens
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    done = subprocess.run(
        [sys.executable, "-c", UNREACHABLE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) <= tracing.SHUTDOWN_SECONDS + 0.5
    assert "did not take them in time" in done.stderr
