"""Naming routes: every route has a name (`openai.chat`) and a group (`openai`); faults, limits and log
queries take a target that is a route name, a group, or `*` for everything."""

from __future__ import annotations

ANY = "*"


def matches(target: str, route: str, group: str) -> bool:
    return target in (ANY, route, group)
