"""The executor: runs one run from its last checkpoint to an end, a pause, or a question for a person.

Per node, in plan order: apply the operator (pure), then the node's bindings with the entity state,
upstream outputs and run metadata as template context. A binding's side effect is bracketed by an
intent row (committed before the call) and an outcome row (after); on resume the recorded outcome is
reused, never resent. An intent without an outcome is *ambiguous*: it is resent (with the same key)
only when repeating is safe, otherwise the run stops in `needs_attention`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from cosmogen.domain.bindings import CompiledBinding, RenderedRequest
from cosmogen.domain.capabilities import (
    Action,
    Capability,
    Provider,
    Registry,
    SettingsError,
    UnknownCapability,
    default_registry,
)
from cosmogen.domain.document import universe_from_raw
from cosmogen.domain.fabric import (
    FabricState,
    NodeOutcome,
    apply,
    binding_scope,
    fail_node,
    new_state,
    record_binding,
    skip_node,
)
from cosmogen.domain.launches import LaunchConfig, LaunchConfigError, TelemetryLevel, parse_launch_config
from cosmogen.domain.plan import EntryScope, Plan, PlanNode, UnknownEntryNode
from cosmogen.domain.ratelimit import Limit, headroom
from cosmogen.domain.runs import RunStatus
from cosmogen.domain.telemetry import keeps_event, shows_payloads
from cosmogen.domain.tiers import tier_refusal
from cosmogen.domain.tokens import token_rejected
from cosmogen.domain.validate import validate
from cosmogen.expr import EvalError
from cosmogen.integrations import credentials
from cosmogen.integrations.connections import (
    AccountResolver,
    AccountUnavailable,
    provider_request,
    shown_provider_request,
)
from cosmogen.integrations.http import HttpCallError, HttpClient
from cosmogen.integrations.ratelimit import RateLimiter, Throttle, Wait
from cosmogen.integrations.redact import redact_body, redact_headers, redact_url
from cosmogen.integrations.retry import repeatable
from cosmogen.runtime import journal
from cosmogen.runtime.journal import EffectRecord, EventLog, RunRecord
from cosmogen.store import Database, GroupCommitWriter, repos
from cosmogen.store.tables import universes
from cosmogen.telemetry.hooks import Hooks, status_class
from cosmogen.telemetry.tracing import Tracer

logger = logging.getLogger(__name__)  # `log` is a run's event log in this module

# The key under which a run started by a launch carries the launch's config: in its initial state, then
# in `state.run` (and so in every checkpoint), like retry details. No column: the config rides with the run.
LAUNCH_CONFIG = "launch_config"
# A response body in a verbose event is cut to this many characters of JSON: enough to see what came
# back, while a large payload stays in the effect row instead of being copied into the event log.
_SHOWN_BODY_CHARS = 2000
# A rate-limit wait at least this long is written down (runs.waiting, an effect.waiting event); shorter
# ones are the normal pace of a busy key and would only add writes.
WAIT_SHOWN_S = 0.5

# Named points where a test can make this process kill itself (SIGKILL), to prove crash safety.
CRASH_POINTS = frozenset(
    {
        "after-start",
        "before-intent",
        "after-intent",
        "after-call",
        "after-outcome",
        "after-checkpoint",
        "before-finish",
    }
)


class PlanUnavailable(Exception):
    """The run's version no longer validates (e.g. this release reads documents differently)."""


@dataclass(frozen=True, slots=True)
class _Stop:
    """A binding needs a person: the run stops in needs_attention with this error."""

    error: dict[str, Any]


@dataclass(slots=True)
class _LeveledLog(EventLog):
    """A run's event log that keeps only what its telemetry level asks for (domain/telemetry.py)."""

    level: TelemetryLevel = TelemetryLevel.STANDARD

    def add(self, type_: str, **payload: Any) -> None:
        if keeps_event(self.level, type_):
            EventLog.add(self, type_, **payload)  # not super(): slots dataclasses break its cell on 3.11


@dataclass(frozen=True, slots=True)
class _CallSpec:
    """How one call is journaled: its effect's name, the header that carries its key, whether a crash
    in flight may be repaired by resending, and how to scrub its answer before it is stored."""

    name: str
    key_header: str | None
    safe_to_repeat: bool
    scrub: Callable[[str], str] | None = None
    # The shared rate limit every attempt of this call (retries too) takes a token from.
    limit: Limit | None = None
    # Metric labels: the provider and capability (a plain HTTP binding is "http" for both).
    provider: str = "http"
    capability: str = "http"
    # When the OAuth access token it is sent with runs out (shown on its outcome event).
    token_expires_at: datetime | None = None


@dataclass
class _Run:
    """What one execution of a run carries from node to node."""

    record: RunRecord
    log: EventLog
    history: dict[tuple[str, str, str], list[EffectRecord]]
    inherited: dict[tuple[str, str], Any]
    # An action another process asked for, seen when an outcome was recorded.
    requested: str | None = None
    # Telemetry `verbose`: events carry node outputs and redacted requests and responses.
    verbose: bool = False
    # A launch's binding_overrides: binding id -> the account to use instead (sandbox -> production).
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class Executor:
    db: Database
    writer: GroupCommitWriter
    http: HttpClient
    worker_id: str
    # Pure nodes between two checkpoints at most: bounds recomputation after a crash and how long a
    # pause or cancel from another process can wait.
    checkpoint_every: int = 64
    crash_at: frozenset[str] = frozenset()
    control_pending: Callable[[str], bool] = lambda _run_id: False
    # True while the process shuts down: runs stop at the next node boundary and are parked as queued.
    draining: Callable[[], bool] = lambda: False
    # Told (run id, node id) after each node, e.g. for a progress bar; must be quick and never raise.
    on_node: Callable[[str, str], None] = lambda _run_id, _node_id: None
    # Provider bindings: the capabilities, and where accounts (and their vault secrets) come from.
    registry: Registry = field(default_factory=default_registry)
    accounts: AccountResolver | None = None
    limiter: RateLimiter | None = None
    workspace: str = "default"
    provider_timeout_s: float = 60.0
    # Metrics (telemetry/hooks.py): no-ops unless the composition root hands in a `Metrics`.
    telemetry: Hooks = field(default_factory=Hooks)
    # Spans for runs, nodes and calls (telemetry/tracing.py): no-ops unless traces were asked for.
    tracer: Tracer = field(default_factory=Tracer)
    _plans: OrderedDict[str, Plan] = field(default_factory=OrderedDict)

    async def execute(
        self, run_id: str, *, fresh: RunRecord | None = None, job_id: int | None = None
    ) -> RunStatus:
        """Run to an end, a pause or a question.

        `fresh`: the record of a run this process has just created already started (journal.create_run
        with claimed_by): nothing to read back and no separate start to commit.
        """
        with self.tracer.span("run", {"cosmogen.run.id": run_id}) as span:
            status = await self._execute(run_id, fresh=fresh, job_id=job_id)
            span.set("cosmogen.run.status", status.value)
            if status in (RunStatus.FAILED, RunStatus.NEEDS_ATTENTION):
                span.fail(f"the run ended {status.value}")
            return status

    async def _execute(self, run_id: str, *, fresh: RunRecord | None, job_id: int | None) -> RunStatus:
        started = time.perf_counter()
        if fresh is not None and fresh.parent_run_id is None:
            record, retry = fresh, None
            plan = self._plan_for(record.version_id)
            log = _LeveledLog(run_id, 2)  # create_run wrote run.queued and run.started
            history: dict[tuple[str, str, str], list[EffectRecord]] = {}
            inherited: dict[tuple[str, str], Any] = {}
        else:
            with self.db.engine.connect() as conn:
                record = journal.load_run(conn, run_id)
                if record.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
                    return record.status
                plan = self._plan(conn, record.version_id)
                log = _LeveledLog(run_id, journal.next_event_seq(conn, run_id))
                history = journal.effects_of(conn, [run_id])
                retry = run_metadata(record, "retry")
                inherited = self._inherited_effects(conn, record.parent_run_id, retry)
            if fresh is None:
                record = await self.writer.write(
                    journal.start_run(run_id, self.worker_id, log, job_id=job_id)
                )
        self._maybe_crash("after-start")
        try:
            launch, entry = _launch_settings(record, plan)
        except (LaunchConfigError, UnknownEntryNode) as exc:
            # Launches are checked when created, so only a run started with a config nobody checked gets here.
            refused = {"code": "invalid-launch-config", "message": str(exc)}
            log.add("run.failed", error=refused["code"])
            await self.writer.write(
                journal.transition(run_id, RunStatus.FAILED, log, error=refused, attempt=record.attempt)
            )
            return self._stopped(RunStatus.FAILED, started)
        verbose = False
        if launch is not None:
            log.level = launch.telemetry_level
            verbose = shows_payloads(launch.telemetry_level)
        run_meta = {
            "id": run_id,
            "universe": record.universe_id,
            "version": record.version_id,
            "dry_run": record.dry_run,
            "attempt": record.attempt,
            "parent": record.parent_run_id,
        }
        if retry:
            run_meta["retry"] = retry
        if launch is not None:
            run_meta[LAUNCH_CONFIG] = launch.to_dict()
        if record.cursor > 0:
            state = FabricState.from_json(record.state)
            state.run = run_meta
        else:
            state = new_state(record.event, run_meta)
        overrides = dict(launch.binding_overrides) if launch is not None else {}
        run = _Run(record, log, history, inherited, verbose=verbose, overrides=overrides)
        results: list[dict[str, Any]] = []
        index = record.cursor
        since_checkpoint = 0
        while index < len(plan.steps):
            node_began = time.perf_counter()
            step = plan.steps[index]
            outside = None if entry is None else entry.skip_reason(step.id)
            # Outside the entry scope a node is not applied and its bindings never run (not even `always`).
            attributes = {"cosmogen.node.id": step.id, "cosmogen.node.type": step.node.type}
            with self.tracer.span(f"node {step.id}", attributes) as node_span:
                outcome = apply(state, plan, step) if outside is None else skip_node(state, step, outside)
                if step.bindings and outside is None:
                    stop = await self._bindings(run, step, outcome, state)
                    if isinstance(stop, _Stop):
                        await self.writer.write(
                            journal.transition(
                                run_id,
                                RunStatus.NEEDS_ATTENTION,
                                log,
                                error=stop.error,
                                attempt=record.attempt,
                            )
                        )
                        return self._stopped(RunStatus.NEEDS_ATTENTION, started)
                    outcome = stop
                results.append(_result_row(step, index, outcome, state))
                shown: dict[str, Any] = (
                    {"output": redact_body(state.outputs.get(step.id))} if run.verbose else {}
                )
                log.add(
                    "node.finished",
                    node=step.id,
                    status=outcome.status,
                    reason=outcome.reason or None,
                    **shown,
                )
                node_span.set("cosmogen.node.status", outcome.status)
                if outcome.status == "error":
                    node_span.fail(outcome.reason or "the node failed")
                self.on_node(run_id, step.id)
                self.telemetry.node_finished(time.perf_counter() - node_began)
            index += 1
            since_checkpoint += 1
            last = index == len(plan.steps)
            parking = not last and self.draining()
            if parking or (
                not last
                and (
                    run.requested or since_checkpoint >= self.checkpoint_every or self.control_pending(run_id)
                )
            ):
                action = await self.writer.write(
                    journal.checkpoint(run_id, index, state.to_json(), results, log, attempt=record.attempt)
                )
                self._maybe_crash("after-checkpoint")
                results, since_checkpoint, run.requested = [], 0, None
                if action in ("pause", "cancel"):
                    target = RunStatus.PAUSED if action == "pause" else RunStatus.CANCELLED
                    log.add("run.requested", action=action)
                    log.add(f"run.{target.value}", at_node=index)
                    await self.writer.write(journal.transition(run_id, target, log, attempt=record.attempt))
                    return self._stopped(target, started)
                if parking:
                    # Graceful shutdown: the checkpoint is committed; queued again, the next process
                    # resumes here without recomputing or asking anyone about a call.
                    log.add("run.parked", at_node=index)
                    await self.writer.write(
                        journal.transition(run_id, RunStatus.QUEUED, log, attempt=record.attempt)
                    )
                    return self._stopped(RunStatus.QUEUED, started)
        final = RunStatus.SUCCEEDED if state.status == "succeeded" else RunStatus.FAILED
        summary = {
            "status": "success" if final is RunStatus.SUCCEEDED else "error",
            "warning": bool(state.paradoxes),
            "run_id": run_id,
            "completedAt": datetime.now(UTC).isoformat(),
            "durationMs": round((time.perf_counter() - started) * 1000, 3),
        }
        failed = [o for o in state.outcomes.values() if o.status == "error"]
        error = (
            {"code": failed[0].error_code, "node": failed[0].node, "message": failed[0].reason}
            if failed
            else None
        )
        log.add(f"run.{final.value}", paradoxes=len(state.paradoxes))
        if error is not None:  # for operators; node ids and messages are user text, the JSON log escapes it
            logger.debug(
                "run %s failed at node %s: %s", run_id, error["node"], error["message"],
                extra={"run_id": run_id, "node": error["node"], "error_code": error["code"]},
            )  # fmt: skip
        self._maybe_crash("before-finish")
        await self.writer.write(
            journal.transition(
                run_id,
                final,
                log,
                cursor=index,
                state=state.to_json(),
                results=results,
                error=error,
                summary=summary,
                attempt=record.attempt,
            )
        )
        return self._stopped(final, started)

    # --- bindings ---------------------------------------------------------------------------------

    async def _bindings(
        self, run: _Run, step: PlanNode, outcome: NodeOutcome, state: FabricState
    ) -> NodeOutcome | _Stop:
        record, log = run.record, run.log
        fired = outcome.status == "complete"
        runnable = outcome.status != "error" and outcome.blocked_by is None
        for compiled in step.bindings:
            binding = compiled.binding
            if not (fired or (runnable and binding.when == "always")):
                continue
            if compiled.is_provider:
                provided = await self._provider_binding(run, step, compiled, binding_scope(state, step))
                if isinstance(provided, _Stop):
                    return provided
                record_binding(state, step, binding.id, provided)
                if "error" in provided and binding.on_error == "fail":
                    message = f"binding {binding.id!r} failed: {provided['error']['message']}"
                    return fail_node(state, step, message, "binding-failed", f"bindings.{binding.id}")
                continue
            try:
                request = compiled.render(binding_scope(state, step))
            except EvalError as exc:
                result: dict[str, Any] = {
                    "status": None,
                    "body": None,
                    "error": {"kind": "template", "message": str(exc)},
                }
                if record.dry_run:
                    # A dry run makes no calls, so holes that read earlier responses cannot be filled; it
                    # shows the problem instead of failing the node.
                    result = {"dry_run": True, "would_fail": result["error"]}
                    log.add("effect.dry_run", node=step.id, binding=binding.id, would_fail=str(exc))
            else:
                if record.dry_run:
                    # The same shape as a real result, empty, so later nodes can still read `status`.
                    result = {"dry_run": True, "status": None, "body": None, "request": _shown(request)}
                    log.add("effect.dry_run", node=step.id, binding=binding.id, request=_shown(request))
                else:
                    plain = _CallSpec(binding.id, binding.idempotency_header, safe_to_repeat=False)
                    answer = await self._effect(run, step, plain, request)
                    if isinstance(answer, _Stop):
                        return answer
                    result = answer
            record_binding(state, step, binding.id, result)
            if "error" in result and binding.on_error == "fail":
                message = f"binding {binding.id!r} failed: {result['error']['message']}"
                return fail_node(state, step, message, "binding-failed", f"bindings.{binding.id}")
        return state.outcomes[step.id]

    def _workspace_of(self, universe_id: str) -> str:
        """The run's own workspace (its universe's): the only one whose accounts it may use, whatever
        workspace this process serves by default (API-02)."""
        with self.db.engine.connect() as conn:
            query = select(universes.c.workspace_id).where(universes.c.id == universe_id)
            found = conn.execute(query).scalar()
        return self.workspace if found is None else str(found)

    async def _provider_binding(
        self, run: _Run, step: PlanNode, compiled: CompiledBinding, scope: Mapping[str, Any]
    ) -> dict[str, Any] | _Stop:
        """A capability through an account: settings rendered and checked, then each of its requests as
        an effect of its own (intent, call, outcome), the answers read by the provider's rules."""
        binding, record, log = compiled.binding, run.record, run.log
        try:
            capability = self.registry.capability(binding.capability or "")
            settings = capability.parse_settings(compiled.render_settings(scope))
        except EvalError as exc:
            if record.dry_run:
                log.add("effect.dry_run", node=step.id, binding=binding.id, would_fail=str(exc))
                return {"dry_run": True, "would_fail": {"kind": "template", "message": str(exc)}}
            return {"status": None, "output": None, "error": {"kind": "template", "message": str(exc)}}
        except (SettingsError, UnknownCapability) as exc:
            problem = {"kind": "settings", "message": str(exc), "action": Action.FIX_SETTING.value}
            return {"status": None, "output": None, "error": problem}
        provider = self.registry.provider_of(capability)
        if record.dry_run:
            return self._provider_dry_run(run, step, compiled, capability, provider, settings)
        account = run.overrides.get(binding.id) or binding.account or ""
        if self.accounts is None:
            refused = {
                "kind": "account",
                "message": "this runtime has no account store, so provider bindings cannot run",
                "action": Action.CONTACT_PROVIDER.value,
            }
            return {"status": None, "output": None, "error": refused}
        try:
            workspace = await asyncio.to_thread(self._workspace_of, record.universe_id)
            connection = await self.accounts.connection(workspace, account, capability, provider)
        except AccountUnavailable as exc:
            refused = {"kind": "account", "message": str(exc), "action": exc.action.value, "account": account}
            return {"status": None, "output": None, "error": refused}
        wrong_tier = tier_refusal(binding.environment, connection.name, connection.tier, connection.verified)
        if wrong_tier is not None:
            refused = {
                "kind": "account",
                "message": wrong_tier,
                "action": Action.FIX_SETTING.value,
                "account": account,
            }
            return {"status": None, "output": None, "error": refused}
        outputs: dict[str, Any] = {}
        status: int | None = None
        for index, provider_step in enumerate(capability.steps):
            wanted = provider_step.build(settings, outputs)
            request = provider_request(provider, connection, wanted, timeout_s=self.provider_timeout_s)
            name = binding.id if len(capability.steps) == 1 else f"{binding.id}.{provider_step.name}"
            spec = _CallSpec(
                name,
                wanted.idempotency_header,
                # Safe to resend after a crash: a read, or a provider that drops a resent key.
                not capability.writes or wanted.idempotency_header is not None,
                scrub=connection.scrub,
                limit=connection.limit,
                provider=provider.id,
                capability=capability.id,
                token_expires_at=connection.token_expires_at,
            )
            answer = await self._effect(run, step, spec, request)
            if isinstance(answer, _Stop):
                return answer
            status = answer.get("status")
            failure = provider.failure(status, answer.get("body")) if isinstance(status, int) else None
            if failure and connection.auth_kind == "oauth2" and token_rejected(status, failure.code):
                # The token was refused (OA-07): one refresh and one retry, journaled as an effect of its
                # own, never a loop. A refused request did nothing, so sending it again is safe.
                try:
                    connection = await self.accounts.refreshed(connection)
                except AccountUnavailable as exc:
                    refused = {"kind": "account", "message": str(exc), "action": exc.action.value}
                    return {"status": status, "output": outputs or None, "error": refused}
                request = provider_request(provider, connection, wanted, timeout_s=self.provider_timeout_s)
                again = replace(spec, name=f"{name}.reauth", scrub=connection.scrub,
                                token_expires_at=connection.token_expires_at)  # fmt: skip
                answer = await self._effect(run, step, again, request)
                if isinstance(answer, _Stop):
                    return answer
                status = answer.get("status")
                failure = provider.failure(status, answer.get("body")) if isinstance(status, int) else None
            if failure is not None:
                error: dict[str, Any] = {
                    "kind": "provider",
                    "code": failure.code,
                    "message": connection.scrub(failure.message),
                    "action": failure.action.value,
                    "step": provider_step.name if index else None,
                }
                if failure.action is Action.RECONNECT:
                    await self._account_refused(run, step, connection.account_id, connection.name, error)
                return {"status": status, "output": outputs or None, "error": error}
            if "error" in answer:  # no answer at all: connection refused, timeout, egress blocked
                return {"status": status, "output": outputs or None, "error": answer["error"]}
            outputs[provider_step.name] = provider_step.normalize(status or 0, answer.get("body"))
        merged = {k: v for out in outputs.values() for k, v in out.items()}
        return {"status": status, "output": merged, "account": connection.name}

    async def _account_refused(
        self, run: _Run, step: PlanNode, account_id: str, name: str, error: dict[str, Any]
    ) -> None:
        """The provider refused the credential itself (after one refresh for OAuth): the account goes to
        `error` (seed-spec §2.2), so its next uses say "reconnect" at once instead of calling again."""
        problem = {k: error[k] for k in ("code", "message", "action")}
        if await self.writer.write(credentials.mark_refused(account_id, problem)):
            run.log.add("account.error", node=step.id, account=name, code=error["code"])

    def _provider_dry_run(
        self,
        run: _Run,
        step: PlanNode,
        compiled: CompiledBinding,
        capability: Capability,
        provider: Provider,
        settings: Any,
    ) -> dict[str, Any]:
        """The requests a provider binding would send, without reading any credential. A later step
        that needs an earlier step's answer is shown as waiting for it."""
        shown: list[dict[str, Any]] = []
        for provider_step in capability.steps:
            try:
                wanted = provider_step.build(settings, {})
            except (KeyError, TypeError):
                shown.append({"step": provider_step.name, "after": shown[-1]["step"] if shown else None})
                continue
            shown.append(
                {"step": provider_step.name, **shown_provider_request(provider, provider.base_url, wanted)}
            )
        requests = redact_body(shown)
        run.log.add("effect.dry_run", node=step.id, binding=compiled.binding.id, requests=requests)
        return {"dry_run": True, "status": None, "output": None, "requests": requests}

    async def _effect(
        self, run: _Run, step: PlanNode, spec: _CallSpec, request: RenderedRequest
    ) -> dict[str, Any] | _Stop:
        record, log = run.record, run.log
        if (step.id, spec.name) in run.inherited:
            return dict(run.inherited[(step.id, spec.name)], reused_from_parent=True)
        attempts = run.history.get((record.id, step.id, spec.name), [])
        latest = attempts[-1] if attempts else None
        group = 0
        can_repeat = repeatable(request.method, spec.key_header is not None) or spec.safe_to_repeat
        if latest is not None:
            if latest.status in ("succeeded", "failed"):
                return dict(latest.response or {})  # recorded before a crash: replay, never resend
            if latest.status == "marked_done":
                return {"marked_done": True}
            if latest.status == "intent" and can_repeat:
                return await self._call(run, step, spec, request, latest.id, latest.idempotency_key)
            if latest.status in ("intent", "ambiguous"):
                if latest.status == "intent":
                    await self.writer.write(journal.set_effect_status(latest.id, "ambiguous"))
                log.add("effect.ambiguous", node=step.id, binding=spec.name, key=latest.idempotency_key)
                return _Stop(
                    {
                        "code": "ambiguous-effect",
                        "node": step.id,
                        "binding": spec.name,
                        "message": (
                            f"the process stopped while calling {request.method} {redact_url(request.url)}; "
                            "it may or may not have happened, and resending could do it twice"
                        ),
                        "actions": ["retry_anyway", "mark_done", "cancel"],
                    }
                )
            group = latest.attempt_group + 1  # the previous attempt was abandoned by a person's decision
        key = f"{record.id}:{step.id}:{spec.name}:{group}"
        self._maybe_crash("before-intent")
        log.add(
            "effect.intent",
            node=step.id,
            binding=spec.name,
            method=request.method,
            url=redact_url(request.url),
            **({"request": _shown(request)} if run.verbose else {}),
        )
        effect_id = await self.writer.write(
            journal.record_intent(
                record.id,
                step.id,
                spec.name,
                group,
                key,
                request.method,
                redact_url(request.url),
                _shown(request),
                log,
            )
        )
        self._maybe_crash("after-intent")
        return await self._call(run, step, spec, request, effect_id, key)

    async def _call(
        self,
        run: _Run,
        step: PlanNode,
        spec: _CallSpec,
        request: RenderedRequest,
        effect_id: int,
        key: str,
    ) -> dict[str, Any] | _Stop:
        log = run.log
        shown_waits: list[asyncio.Task[None]] = []

        def on_wait(wait: Wait) -> None:
            self.telemetry.rate_limit_wait(
                spec.provider, "retry_after" if wait.blocked else "rate_limit", wait.seconds
            )
            # Long waits are written down at once (runs.waiting plus an event), so a run held by a shared
            # rate limit or a 429's Retry-After says so instead of looking stuck.
            if wait.seconds < WAIT_SHOWN_S:
                return
            reason = "rate_limit_retry_after" if wait.blocked else "rate_limit"
            until = datetime.fromtimestamp(wait.until, UTC).isoformat()
            log.add("effect.waiting", node=step.id, binding=spec.name, reason=reason, until=until)
            waiting = {"reason": reason, "until": until, "node": step.id, "binding": spec.name}
            write = self.writer.write(journal.set_waiting(run.record.id, waiting, log))
            shown_waits.append(asyncio.ensure_future(write))

        began = time.perf_counter()
        traced = {
            "cosmogen.binding": spec.name,
            "cosmogen.provider": spec.provider,
            "cosmogen.capability": spec.capability,
            "http.request.method": request.method,
            "url.full": redact_url(request.url),
        }
        try:
            throttle = (
                Throttle.for_limit(self.limiter, spec.limit, on_wait)
                if self.limiter is not None and spec.limit is not None
                else None
            )
            with self.tracer.span(f"call {spec.capability}", traced) as call_span:
                try:
                    response = await self.http.send(
                        request,
                        idempotency_key=key,
                        key_header=spec.key_header,
                        throttle=throttle,
                        safe_to_repeat=spec.safe_to_repeat,
                    )
                except HttpCallError as exc:
                    call_span.set("cosmogen.attempts", exc.attempts)
                    if exc.status is not None:
                        call_span.set("http.response.status_code", exc.status)
                    call_span.fail(
                        f"HTTP {exc.status}" if exc.status is not None else f"{exc.kind}: no answer"
                    )
                    raise
                call_span.set("http.response.status_code", response.status)
                call_span.set("cosmogen.attempts", response.attempts)
                if response.status >= 400:
                    call_span.fail(f"HTTP {response.status}")
        except HttpCallError as exc:
            # Failures keep the shape of a success, so later nodes can read `status` and `body` either way.
            result: dict[str, Any] = {
                "status": exc.status,
                "body": exc.body,
                "attempts": exc.attempts,
                "error": {"kind": exc.kind, "message": str(exc)},
            }
            # Sent, then no answer (timeout, broken connection): it may have happened. Unless repeating is
            # safe it is neither retried nor "failed" (a retry of the run would send it again): a person
            # decides, as after a crash during the call (DUR-12).
            can_repeat = repeatable(request.method, spec.key_header is not None) or spec.safe_to_repeat
            status = "ambiguous" if exc.kind in ("timeout", "disconnect") and not can_repeat else "failed"
            shown_status = status_class(exc.status, exc.kind)
            room = None
        else:
            result = {"status": response.status, "body": response.body, "attempts": response.attempts}
            status = "succeeded"
            shown_status = status_class(response.status)
            room = headroom(response.headers)
        took = time.perf_counter() - began
        self.telemetry.call_finished(spec.provider, spec.capability, shown_status, took, result["attempts"])
        if spec.scrub is not None:
            result = _scrubbed(result, spec.scrub)  # a provider may echo the credential it was sent
        self._maybe_crash("after-call")
        log.add(
            f"effect.{status}",
            node=step.id,
            binding=spec.name,
            status=result.get("status"),
            # What a dashboard shows per call: who, how long, how many tries, the room left at the
            # provider, and how long the token it was sent with still has.
            provider=spec.provider,
            capability=spec.capability,
            ms=round(took * 1000, 1),
            attempts=result["attempts"],
            **({"rate_limit": room} if room is not None else {}),
            **(
                {"token_expires_in_s": int((spec.token_expires_at - datetime.now(UTC)).total_seconds())}
                if spec.token_expires_at is not None
                else {}
            ),
            **({"response": _response_summary(result)} if run.verbose else {}),
        )
        if shown_waits:
            await asyncio.gather(*shown_waits)
        run.requested = await self.writer.write(
            journal.record_outcome(
                effect_id, run.record.id, status, result, log, was_waiting=bool(shown_waits)
            )
        )
        self._maybe_crash("after-outcome")
        if status == "ambiguous":
            return _Stop(
                {
                    "code": "ambiguous-effect",
                    "node": step.id,
                    "binding": spec.name,
                    "message": (
                        f"{request.method} {redact_url(request.url)} got no answer "
                        f"({result['error']['message']}); it may or may not have happened, and resending "
                        "could do it twice"
                    ),
                    "actions": ["retry_anyway", "mark_done", "cancel"],
                }
            )
        return result

    # --- helpers ----------------------------------------------------------------------------------

    def _stopped(self, status: RunStatus, started: float) -> RunStatus:
        """The executor stops working on the run with `status` (metrics hear of it)."""
        self.telemetry.run_finished(status.value, time.perf_counter() - started)
        return status

    def _plan_for(self, version_id: str) -> Plan:
        """The cached plan, reading the version only on a miss."""
        plan = self._plans.get(version_id)
        if plan is not None:
            return plan
        with self.db.engine.connect() as conn:
            return self._plan(conn, version_id)

    def _plan(self, conn: Connection, version_id: str) -> Plan:
        plan = self._plans.get(version_id)
        if plan is None:
            version = repos.get_version(conn, version_id)
            if version is None:
                raise PlanUnavailable(f"version {version_id} does not exist")
            universe, _ = universe_from_raw(version.document)
            report = validate(universe)
            if report.plan is None:
                raise PlanUnavailable("; ".join(d.message for d in report.errors))
            plan = self._plans[version_id] = report.plan
            if len(self._plans) > 256:
                self._plans.popitem(last=False)
        self._plans.move_to_end(version_id)
        return plan

    def _inherited_effects(
        self, conn: Connection, parent: str | None, retry: dict[str, Any] | None
    ) -> dict[tuple[str, str], Any]:
        """A retry reuses its parent's successful calls made before the node that failed."""
        if parent is None or not retry:
            return {}
        upto = set(retry.get("before", []))
        found = journal.effects_of(conn, [parent])
        return {
            (node, binding): attempts[-1].response
            for (_, node, binding), attempts in found.items()
            if node in upto and attempts[-1].status == "succeeded"
        }

    def _maybe_crash(self, point: str) -> None:
        if point in self.crash_at:
            os.kill(os.getpid(), signal.SIGKILL)


def run_metadata(record: RunRecord, key: str) -> dict[str, Any] | None:
    """A run's carried metadata (retry details, launch config): in the initial state, then in every
    checkpoint's `run`."""
    source = record.state if record.cursor == 0 else record.state.get("run", {})
    value = source.get(key)
    return value if isinstance(value, dict) else None


def _launch_settings(record: RunRecord, plan: Plan) -> tuple[LaunchConfig | None, EntryScope | None]:
    """The config of the launch that started the run (None without one) and its entry scope, if any.
    Raises LaunchConfigError or UnknownEntryNode for a config that does not fit."""
    raw = run_metadata(record, LAUNCH_CONFIG)
    if raw is None:
        return None, None
    launch = parse_launch_config(raw)
    entry = None if launch.entry_node is None else EntryScope.of(plan, launch.entry_node)
    return launch, entry


def launch_state(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new run's initial state carrying a launch's config (checked and in its normal form)."""
    return {} if config is None else {LAUNCH_CONFIG: parse_launch_config(config).to_dict()}


def _result_row(step: PlanNode, index: int, outcome: NodeOutcome, state: FabricState) -> dict[str, Any]:
    error = (
        {"code": outcome.error_code, "message": outcome.reason, "field": outcome.field}
        if outcome.status == "error"
        else None
    )
    return {
        "node_id": step.id,
        "seq": index,
        "status": outcome.status,
        "output": state.outputs.get(step.id),
        "error": error,
    }


def _response_summary(result: dict[str, Any]) -> dict[str, Any]:
    """A call's result as a verbose event shows it: secret-named fields masked, a long body cut short."""
    summary: dict[str, Any] = {"status": result.get("status"), "attempts": result.get("attempts")}
    if "error" in result:
        summary["error"] = result["error"]
    body = redact_body(result.get("body"))
    text = json.dumps(body, ensure_ascii=False, default=str)
    if len(text) > _SHOWN_BODY_CHARS:
        summary["body_truncated"] = text[:_SHOWN_BODY_CHARS]
    else:
        summary["body"] = body
    return summary


def _shown(request: RenderedRequest) -> dict[str, Any]:
    """A request as it may be stored and shown: secrets masked."""
    return {
        "method": request.method,
        "url": redact_url(request.url),
        "headers": redact_headers(request.headers),
        "body": redact_body(request.body),
    }


def _scrubbed(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v, scrub) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, scrub) for v in value]
    return value
