"""The CLI contracts of ARCHITECTURE.md, through the real entry point in fresh processes."""

import json
from pathlib import Path

import pytest

from cosmogen import __version__

from .conftest import CLI, EXAMPLES


def write(tmp_path: Path, content: str, name: str = "u.json") -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


def test_version(cosmogen: CLI) -> None:
    done = cosmogen("--version")
    assert done.returncode == 0
    assert __version__ in done.stdout


def test_run_prints_a_readable_narrative(cosmogen: CLI) -> None:
    done = cosmogen("run", str(EXAMPLES / "banking.json"))
    assert done.returncode == 0, done.stderr
    assert "Banking v1: succeeded (run " in done.stdout
    assert "Alice spends 150 and has -50 left" in done.stdout
    assert "account:alice is repaired: balance: -50 → 0" in done.stdout
    assert 'account:alice  {"balance": 0, "tier": "gold"}' in done.stdout


def test_run_json_has_the_contract_fields(cosmogen: CLI) -> None:
    done = cosmogen("run", str(EXAMPLES / "paradox.json"), "--json")
    result = json.loads(done.stdout)
    assert {"status", "entities", "branches", "paradoxes", "trace"} <= result.keys()
    assert all({"universe", "reason", "entities"} <= b.keys() for b in result["branches"])
    assert all({"before", "after", "narrative"} <= t.keys() for t in result["trace"])


def test_failed_run_exits_1_and_says_why(cosmogen: CLI, tmp_path: Path) -> None:
    doc = {
        "cosmogen": "universe/1",
        "name": "div",
        "nodes": [
            {"id": "b", "type": "begin", "entity": "e", "properties": {"n": 1, "d": 0}},
            {"id": "s", "type": "become", "entity": "e", "transform": {"n": "n / d"}},
        ],
        "edges": [{"source": "b", "target": "s"}],
    }
    done = cosmogen("run", write(tmp_path, json.dumps(doc)))
    assert done.returncode == 1
    assert "division" in done.stdout
    as_json = json.loads(cosmogen("run", write(tmp_path, json.dumps(doc)), "--json").stdout)
    assert as_json["status"] == "failed"
    assert as_json["nodes"]["s"]["error"]["code"] == "division_by_zero"


def test_validate_exits_0_when_valid(cosmogen: CLI) -> None:
    done = cosmogen("validate", str(EXAMPLES / "banking.json"))
    assert done.returncode == 0
    assert "valid" in done.stdout


def test_validate_exits_2_with_diagnostics(cosmogen: CLI, tmp_path: Path) -> None:
    doc = {
        "cosmogen": "universe/1",
        "name": "bad",
        "nodes": [
            {"id": "b", "type": "begin", "entity": "e", "properties": {"n": 1}},
            {"id": "s", "type": "become", "entity": "e", "transform": {"n": "n +"}},
        ],
        "edges": [{"source": "b", "target": "s"}, {"source": "s", "target": "b"}],
    }
    path = write(tmp_path, json.dumps(doc))
    done = cosmogen("validate", path, "--json")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["valid"] is False
    codes = {d["code"] for d in report["diagnostics"]}
    assert {"cycle", "expr-syntax"} <= codes
    assert all({"code", "message"} <= d.keys() for d in report["diagnostics"])
    human = cosmogen("validate", path)
    assert human.returncode == 2
    assert "error: cycle" in human.stderr
    assert "hint:" in human.stderr


BAD_INPUTS = {
    "malformed": '{"cosmogen": "universe/1", "name": ',
    "wrong-types": '{"cosmogen": "universe/1", "name": 5, "nodes": {}}',
    "unknown-field": '{"cosmogen": "universe/1", "name": "x", "nodes": [], "colour": "red"}',
    "deep": '{"cosmogen": "universe/1", "name": "x", "nodes": [], "x": ' + "[" * 10_000 + "]" * 10_000 + "}",
    "huge-expression": json.dumps(
        {
            "cosmogen": "universe/1",
            "name": "x",
            "nodes": [
                {"id": "b", "type": "begin", "entity": "e", "properties": {"n": 1}},
                {"id": "s", "type": "become", "entity": "e", "transform": {"n": "n" + " + 1" * 262_144}},
            ],
            "edges": [{"source": "b", "target": "s"}],
        }
    ),
    "deep-expression": json.dumps(
        {
            "cosmogen": "universe/1",
            "name": "x",
            "nodes": [
                {"id": "b", "type": "begin", "entity": "e", "properties": {"n": 1}},
                {
                    "id": "s",
                    "type": "become",
                    "entity": "e",
                    "transform": {"n": "(" * 10_000 + "n" + ")" * 10_000},
                },
            ],
            "edges": [{"source": "b", "target": "s"}],
        }
    ),
    "not-utf8": "\udcff",
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_input_gets_a_clear_message_and_exit_2(
    cosmogen: CLI, tmp_path: Path, kind: str, command: str
) -> None:
    path = tmp_path / "u.json"
    path.write_bytes(BAD_INPUTS[kind].encode("utf-8", "surrogateescape"))
    done = cosmogen(command, str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    assert "error:" in done.stderr
    as_json = cosmogen(command, str(path), "--json")
    assert as_json.returncode == 2
    body = json.loads(as_json.stdout)
    assert body["diagnostics"]
    assert all(d["message"] for d in body["diagnostics"])


def test_missing_file_and_directory_are_clear_errors(cosmogen: CLI, tmp_path: Path) -> None:
    missing = cosmogen("run", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    directory = cosmogen("validate", str(tmp_path))
    assert directory.returncode == 2
    assert "is a directory" in directory.stderr


def test_bad_event_data_is_refused(cosmogen: CLI) -> None:
    done = cosmogen("run", str(EXAMPLES / "onboarding.json"), "--event", "signup", "--data", "[1]")
    assert done.returncode == 2
    assert "--data must be a JSON object" in done.stderr


def test_run_reads_stdin(cosmogen: CLI) -> None:
    done = cosmogen("run", "-", "--json", stdin=(EXAMPLES / "vip.json").read_text())
    assert done.returncode == 0
    assert json.loads(done.stdout)["branches"][0]["universe"] == "universe:vip"


def test_import_converts_the_original_studio_format(cosmogen: CLI, tmp_path: Path) -> None:
    out = tmp_path / "converted.json"
    done = cosmogen("import", str(EXAMPLES / "legacy" / "original-studio-version.json"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    converted = json.loads(out.read_text())
    assert converted["cosmogen"] == "universe/1"
    assert converted["name"] == "Banking Flow"
    nodes = {n["id"]: n for n in converted["nodes"]}
    assert nodes["begin-1"]["properties"] == {"balance": 100, "tier": "gold"}
    assert nodes["become-1"]["transform"] == {"balance": "balance + 50"}
    assert nodes["become-2"]["transform"] == {"balance": "balance - 400"}
    assert nodes["become-2"]["on_event"] == "withdrawal"
    assert nodes["transcend-1"]["condition"] == "tier == 'gold'"
    assert "law-1" not in nodes
    assert "import-dropped-node" in done.stderr
    assert "import-trigger-text" in done.stderr
    run = cosmogen("run", str(out), "--json", "--event", "withdrawal")
    result = json.loads(run.stdout)
    assert result["status"] == "succeeded"
    assert result["entities"] == {}


def test_legacy_file_runs_directly_with_upgrade_notes(cosmogen: CLI) -> None:
    done = cosmogen("run", str(EXAMPLES / "legacy" / "original-studio-version.json"), "--json")
    assert done.returncode == 0
    result = json.loads(done.stdout)
    assert result["branches"][0]["entities"] == {"account:alice": {"balance": 150, "tier": "gold"}}
    assert {"import-number", "import-dropped-node"} <= {w["code"] for w in result["warnings"]}


def test_memory_run_needs_no_store(cosmogen: CLI) -> None:
    done = cosmogen("run", str(EXAMPLES / "banking.json"), "--memory")
    assert done.returncode == 0, done.stderr
    assert "Banking: succeeded in" in done.stdout
    assert "account:alice is repaired" in done.stdout


def test_durable_runs_are_listed_shown_and_their_events_kept(cosmogen: CLI) -> None:
    first = json.loads(cosmogen("run", str(EXAMPLES / "vip.json"), "--json").stdout)
    second = json.loads(cosmogen("run", str(EXAMPLES / "vip.json"), "--json", "--dry-run").stdout)
    assert (first["version"], second["version"]) == (1, 1)  # the same document is one version
    assert second["dry_run"] is True
    listed = json.loads(cosmogen("runs", "list", "--json").stdout)
    assert [r["run_id"] for r in listed] == [second["run_id"], first["run_id"]]
    shown = json.loads(cosmogen("runs", "show", first["run_id"], "--json").stdout)
    assert shown["branches"][0]["entities"]["account:bob"]["tier"] == "platinum"
    events = json.loads(cosmogen("runs", "events", first["run_id"], "--json").stdout)
    assert events[0]["type"] == "run.queued"
    assert events[-1]["type"] == "run.succeeded"
    human = cosmogen("runs", "list")
    assert "VIP transcend (dry run)" in human.stdout


def test_unknown_run_is_a_clear_error(cosmogen: CLI) -> None:
    done = cosmogen("runs", "show", "nope")
    assert done.returncode == 2
    assert "no run 'nope'" in done.stderr


def test_illegal_action_names_what_is_possible(cosmogen: CLI) -> None:
    run = json.loads(cosmogen("run", str(EXAMPLES / "banking.json"), "--json").stdout)
    done = cosmogen("runs", "pause", run["run_id"])
    assert done.returncode == 2
    assert "a succeeded run cannot pause" in done.stderr
    assert "Traceback" not in done.stderr


def test_providers_lists_every_executable_capability_and_the_catalog_as_json(cosmogen: CLI) -> None:
    listed = cosmogen("providers")
    assert listed.returncode == 0
    assert "slack.post_message" in listed.stdout and "channel, text, thread_ts?" in listed.stdout
    assert "36 more catalog entries are not executable yet" in listed.stdout
    catalog = json.loads(cosmogen("providers", "--json").stdout)
    executable = [c["id"] for p in catalog if p["executable"] for c in p["capabilities"]]
    assert "instagram.publish_story" in executable and len(executable) == 11
    assert "github" in cosmogen("providers", "--all").stdout
