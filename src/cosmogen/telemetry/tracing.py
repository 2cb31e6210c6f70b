"""Traces: a span for each run, one inside it for each node, and one inside that for each external call.

Off by default: `Tracer` hands out one do-nothing span, so the executor's hot path pays an attribute
lookup and two empty method calls per node. With `COSMOGEN_OTEL_ENDPOINT` set (the OTLP/HTTP traces URL
of a collector, e.g. `http://127.0.0.1:4318/v1/traces`), `serve` and `worker` use `OTelTracer`, which
exports in batches from a background thread through the OpenTelemetry SDK. The SDK is the optional extra
`cosmogen[otel]`; asking for traces without it is a start-up error, never a silent no-op.

The collector's URL is operator configuration, like the database URL, so it is not subject to the egress
guard, which checks the URLs that universes and accounts send requests to. Span attributes carry ids,
names, methods, status codes and redacted URLs, never a payload or a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

Attributes = Mapping[str, str | int | float | bool]


class TracingSettingError(ValueError):
    """COSMOGEN_OTEL_ENDPOINT cannot be used; the message says what to change."""


class Span(Protocol):
    def __enter__(self) -> Span: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def set(self, key: str, value: str | int | float | bool) -> None: ...

    def fail(self, message: str) -> None: ...


class _NoSpan:
    """Every method does nothing; one instance serves every span of a `Tracer`."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def set(self, key: str, value: str | int | float | bool) -> None:
        return None

    def fail(self, message: str) -> None:
        return None


class Tracer:
    """No tracing (the default)."""

    def __init__(self) -> None:
        self._nothing = _NoSpan()

    def span(self, name: str, attributes: Attributes) -> Span:
        """A span to use as a context manager; nested `with` blocks in one task nest the spans."""
        return self._nothing

    def close(self) -> None:
        """Send what is buffered and stop (called when the runtime closes)."""


class _OTelSpan:
    def __init__(self, tracer: Any, name: str, attributes: Attributes) -> None:
        # Exceptions are not recorded: their messages are not ours to vet for secrets; `fail` says why.
        self._manager = tracer.start_as_current_span(
            name, attributes=dict(attributes), record_exception=False, set_status_on_exception=False
        )
        self._span: Any = None

    def __enter__(self) -> _OTelSpan:
        self._span = self._manager.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._manager.__exit__(kind, error, tb)

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def fail(self, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_status(Status(StatusCode.ERROR, message))


class OTelTracer(Tracer):
    """Spans through an OpenTelemetry `TracerProvider` (ours: it is shut down by `close`)."""

    def __init__(self, provider: Any) -> None:
        super().__init__()
        self._provider = provider
        self._tracer = provider.get_tracer("cosmogen")

    def span(self, name: str, attributes: Attributes) -> Span:
        return _OTelSpan(self._tracer, name, attributes)

    def close(self) -> None:
        self._provider.shutdown()  # flushes the batch processor first


def check_endpoint(raw: str | None) -> str | None:
    """COSMOGEN_OTEL_ENDPOINT: None or empty (no traces), or an http(s) URL of a collector's traces path."""
    if raw is None or not raw.strip():
        return None
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TracingSettingError(
            "COSMOGEN_OTEL_ENDPOINT must be the http(s) URL of an OTLP/HTTP collector's traces path, "
            f"e.g. http://127.0.0.1:4318/v1/traces, not {url[:100]!r}"
        )
    require_sdk()
    return url


def require_sdk() -> None:
    """Traces need the optional OpenTelemetry packages: say so at start-up, not at the first span."""
    from importlib.util import find_spec

    if find_spec("opentelemetry.sdk") is None or find_spec("opentelemetry.exporter.otlp") is None:
        raise TracingSettingError(
            "COSMOGEN_OTEL_ENDPOINT is set, but the OpenTelemetry packages are not installed: "
            "install the extra (pip install 'cosmogen[otel]') or unset it"
        )


def open_tracer(endpoint: str | None, *, service: str = "cosmogen") -> Tracer:
    """The tracer the composition root hands to the runtime: none without an endpoint."""
    if endpoint is None:
        return Tracer()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingSettingError(
            "COSMOGEN_OTEL_ENDPOINT is set, but the OpenTelemetry packages are not installed: "
            "install the extra (pip install 'cosmogen[otel]') or unset it"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
    return OTelTracer(provider)
