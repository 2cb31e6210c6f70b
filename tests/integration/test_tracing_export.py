"""Traces leave `cosmogen serve` over real OTLP/HTTP: with COSMOGEN_OTEL_ENDPOINT pointing at a collector
(here a plain HTTP server on 127.0.0.1 that keeps what it is sent), a run's spans arrive when serve
stops, protobuf-encoded as the OpenTelemetry protocol says, run -> nodes in one trace. A bad endpoint
stops start-up with a message naming the setting."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.integration.conftest import CLI, EXAMPLES, serving
from tests.integration.test_sandbox import _run_through_serve


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_runs_spans_reach_the_collector(
    tmp_path: Path, cosmogen: CLI, collector: tuple[str, list[tuple[str, str, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    endpoint, received = collector
    monkeypatch.setenv("COSMOGEN_OTEL_ENDPOINT", endpoint)
    universe = tmp_path / "banking.json"
    universe.write_text((EXAMPLES / "banking.json").read_text())
    with serving(tmp_path, "--no-sandbox"):
        ran = _run_through_serve(cosmogen, universe)
    assert ran["status"] == "succeeded", ran

    assert received and {(path, kind) for path, kind, _ in received} == {
        ("/v1/traces", "application/x-protobuf")
    }
    spans: list[tuple[str, bytes, bytes, dict[str, Any]]] = []
    for _, _, body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
            assert service == "cosmogen"
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: json.loads(json_value(a.value)) for a in span.attributes}
                    spans.append((span.name, span.trace_id, span.parent_span_id, attributes))
    [run] = [s for s in spans if s[0] == "run" and s[3]["cosmogen.run.id"] == ran["run_id"]]
    assert run[2] == b"" and run[3]["cosmogen.run.status"] == "succeeded"
    nodes = [s for s in spans if s[1] == run[1] and s[0].startswith("node ")]
    document = json.loads(universe.read_text())
    expected = {f"node {n['id']}" for n in document["nodes"]}
    assert {s[0] for s in nodes} <= expected and len(nodes) >= 2
    assert all(s[2] != b"" for s in nodes)


def json_value(value: Any) -> str:
    """An OTLP AnyValue as JSON text (strings, integers and booleans are what we send)."""
    kind = value.WhichOneof("value")
    return json.dumps(getattr(value, kind))


def test_a_bad_endpoint_stops_start_up(cosmogen: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSMOGEN_OTEL_ENDPOINT", "ftp://collector.example/v1/traces")
    refused = cosmogen("serve", "--port", "1")
    assert refused.returncode == 2
    assert "COSMOGEN_OTEL_ENDPOINT must be the http(s) URL" in refused.stderr
