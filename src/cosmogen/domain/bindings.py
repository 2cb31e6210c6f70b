"""Bindings compiled for execution, and rendering a binding into a concrete request. Pure."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cosmogen.domain.model import Binding
from cosmogen.expr import CompileError, Template, compile_template


@dataclass(frozen=True, slots=True)
class RenderedRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: Any
    timeout_s: float
    follow_redirects: bool = True  # see integrations/http.py for which redirects are followed


@dataclass(frozen=True, slots=True)
class CompiledBinding:
    binding: Binding
    url: Template | None  # http bindings
    headers: tuple[tuple[str, Template], ...]
    body: Any  # the body's JSON shape with a Template at every string leaf
    settings: Any = None  # provider bindings: the settings' JSON shape, templates at the string leaves

    @property
    def id(self) -> str:
        return self.binding.id

    @property
    def is_provider(self) -> bool:
        return self.binding.kind == "provider"

    def templates(self) -> Iterator[tuple[str, Template]]:
        if self.url is not None:
            yield "request.url", self.url
        for name, template in self.headers:
            yield f"request.headers.{name}", template
        yield from _body_templates(self.body, "request.body")
        yield from _body_templates(self.settings, "settings")

    def render_settings(self, scope: Mapping[str, Any]) -> dict[str, Any]:
        """A provider binding's settings with the templates filled (checked by the capability next)."""
        rendered = _render_body(self.settings, scope)
        return rendered if isinstance(rendered, dict) else {}

    def render(self, scope: Mapping[str, Any]) -> RenderedRequest:
        """Fill the templates; raises the expression engine's EvalError when a hole fails."""
        request = self.binding.request
        assert request is not None and self.url is not None, "render() is for http bindings"
        return RenderedRequest(
            method=request.method,
            url=self.url.render(scope),
            headers={name: template.render(scope) for name, template in self.headers},
            body=_render_body(self.body, scope),
            timeout_s=request.timeout_s,
            follow_redirects=request.follow_redirects,
        )


def compile_binding(binding: Binding) -> tuple[CompiledBinding | None, list[tuple[str, CompileError]]]:
    """Compile every template of a binding; returns the compile errors by field instead of raising."""
    errors: list[tuple[str, CompileError]] = []

    def compile_at(where: str, source: str) -> Template | None:
        try:
            return compile_template(source)
        except CompileError as exc:
            errors.append((where, exc))
            return None

    if binding.request is None:
        settings = _compile_body(binding.settings, "settings", compile_at)
        if errors:
            return None, errors
        return CompiledBinding(binding, None, (), None, settings), errors
    url = compile_at("request.url", binding.request.url)
    headers = tuple((k, compile_at(f"request.headers.{k}", v)) for k, v in binding.request.headers.items())
    body = _compile_body(binding.request.body, "request.body", compile_at)
    if errors or url is None:
        return None, errors
    return CompiledBinding(binding, url, tuple((k, t) for k, t in headers if t is not None), body), errors


def _compile_body(value: Any, where: str, compile_at: Any) -> Any:
    if isinstance(value, str):
        return compile_at(where, value)
    if isinstance(value, dict):
        return {k: _compile_body(v, f"{where}.{k}", compile_at) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_body(v, f"{where}[{i}]", compile_at) for i, v in enumerate(value)]
    return value


def _render_body(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        # A string that is exactly one hole keeps the value's type: "{{ balance }}" sends a number.
        return value.render_value(scope)
    if isinstance(value, dict):
        return {k: _render_body(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_body(v, scope) for v in value]
    return value


def _body_templates(value: Any, where: str) -> Iterator[tuple[str, Template]]:
    if isinstance(value, Template):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _body_templates(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _body_templates(v, f"{where}[{i}]")
