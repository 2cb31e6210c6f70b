"""Test support shipped with cosmogen: document builders now; the provider simulator comes with integrations."""
