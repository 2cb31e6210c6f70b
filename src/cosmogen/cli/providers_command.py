"""`cosmogen providers`: what can be bound: each provider's capabilities and their settings, and the
catalog entries that are not executable yet."""

from __future__ import annotations

import json

import click

from cosmogen.domain.capabilities import default_registry


@click.command("providers")
@click.option("--json", "as_json", is_flag=True, help="The whole catalog with settings schemas, as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Also list the catalog entries not executable yet.")
def providers_command(as_json: bool, show_all: bool) -> None:
    """List providers and the capabilities a provider binding can use."""
    catalog = default_registry().catalog()
    if as_json:
        click.echo(json.dumps(catalog, indent=2))
        return
    for provider in catalog:
        if not provider["executable"]:
            continue
        click.echo(f"{provider['name']} ({provider['id']}; accounts: {', '.join(provider['auth_kinds'])})")
        for capability in provider["capabilities"]:
            schema = capability["settings_schema"]
            required = set(schema.get("required", []))
            settings = ", ".join(
                name + ("" if name in required else "?") for name in schema.get("properties", {})
            )
            click.echo(f"  {capability['id']:<26} {capability['label']}: {settings}")
    pending = [p for p in catalog if not p["executable"]]
    if show_all:
        click.echo("not executable yet:")
        for provider in pending:
            click.echo(f"  {provider['id']:<20} {provider['name']}")
    else:
        click.echo(f"({len(pending)} more catalog entries are not executable yet: --all lists them)")
