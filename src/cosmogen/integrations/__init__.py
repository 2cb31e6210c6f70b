"""Talking to the outside world: retry policy, egress guard, HTTP bindings (providers and OAuth follow)."""
