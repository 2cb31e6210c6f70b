"""The universe document as typed, immutable values.

These models are the schema of `universe/1` documents: unknown fields are refused, so a typo such as
`"tranform"` is reported instead of silently ignored (the original studio ignored them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = "universe/1"

# JSON-like values as they live in entity properties and run results.
JSONValue = Any

NodeId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
EntityId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ExprSource = Annotated[str, StringConstraints(min_length=1)]
# A transform, repair or mapping: {property: CEL expression}.
ExprMap = dict[Annotated[str, StringConstraints(min_length=1, max_length=256)], ExprSource]

NODE_TYPES = ("begin", "become", "cease", "transcend", "resolve", "law")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CanvasPosition(Model):
    x: float
    y: float
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class NodeBase(Model):
    id: NodeId
    label: str | None = None
    narrative: str | None = None
    position: CanvasPosition | None = None


class BeginNode(NodeBase):
    type: Literal["begin"]
    entity: EntityId
    properties: dict[str, JSONValue] = Field(default_factory=dict)


class BecomeNode(NodeBase):
    type: Literal["become"]
    entity: EntityId
    transform: ExprMap
    # A boolean CEL expression; absent means "always".
    trigger: ExprSource | None = None
    # The original's WHEN(event): fire only when the run's event has this name.
    on_event: str | None = None


class CeaseNode(NodeBase):
    type: Literal["cease"]
    entity: EntityId
    condition: ExprSource
    action: Literal["terminate", "repair", "fork"] = "terminate"
    repair: ExprMap | None = None


class TranscendNode(NodeBase):
    type: Literal["transcend"]
    entity: EntityId
    portal: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    condition: ExprSource | None = None
    mapping: ExprMap = Field(default_factory=dict)


class ResolveNode(NodeBase):
    type: Literal["resolve"]
    entity: EntityId
    strategy: Literal["merge", "first-wins", "last-wins", "manual"] = "merge"


class LawNode(NodeBase):
    type: Literal["law"]
    # An entity id, or a glob such as `account:*` to govern every matching entity.
    entity: EntityId
    name: str | None = None
    # {invariant name: boolean CEL expression that must hold}
    invariants: dict[Annotated[str, StringConstraints(min_length=1)], ExprSource] = Field(min_length=1)
    repair: ExprMap | None = None


Node = Annotated[
    BeginNode | BecomeNode | CeaseNode | TranscendNode | ResolveNode | LawNode,
    Field(discriminator="type"),
]


NODE_CLASSES: dict[str, type[NodeBase]] = {
    "begin": BeginNode,
    "become": BecomeNode,
    "cease": CeaseNode,
    "transcend": TranscendNode,
    "resolve": ResolveNode,
    "law": LawNode,
}


class Edge(Model):
    source: NodeId
    target: NodeId
    id: str | None = None
    label: str | None = None


class HttpRequest(Model):
    """An HTTP call; every string in url, headers and body is a template (`{{ expression }}`)."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: Annotated[str, StringConstraints(min_length=1, max_length=8192)]
    headers: dict[str, str] = Field(default_factory=dict)
    body: JSONValue = None
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # false: a 3xx comes back as the answer instead of being followed (integrations/http.py).
    follow_redirects: bool = True


class Binding(Model):
    """Work a node does in the outside world after its operator, with the entity state as context.

    `kind: "http"` sends `request` as written. `kind: "provider"` runs a capability of the registry
    (domain/capabilities, e.g. "slack.post_message") with `settings` through a saved `account`: the
    runtime adds the base URL, the credential, the rate limit and the provider's error meanings.
    """

    id: NodeId
    node: NodeId
    kind: Literal["http", "provider"] = "http"
    request: HttpRequest | None = None
    capability: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    # The account's name in the workspace; a launch's binding_overrides may swap it for another.
    account: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    # Every string in settings is a template (`{{ expression }}`), rendered before the settings are checked.
    settings: dict[str, JSONValue] = Field(default_factory=dict)
    # "fired": only when the node's operator fired; "always": also when it was skipped.
    when: Literal["fired", "always"] = "fired"
    # "fail": a failed call fails the node; "continue": the failure is recorded and the run goes on.
    on_error: Literal["fail", "continue"] = "fail"
    # Send the effect's idempotency key in this header, so the provider can drop a resent request
    # and the runtime may resend after a crash (e.g. "Idempotency-Key").
    idempotency_header: str | None = None
    # Provider bindings: "production" refuses sandbox and unverified accounts (domain/tiers.py).
    environment: Literal["sandbox", "production"] = "sandbox"

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> Binding:
        if self.kind == "http":
            if self.request is None:
                raise ValueError("an http binding needs 'request' ({url, method, headers, body})")
            if self.environment != "sandbox":
                raise ValueError(
                    "'environment' chooses which accounts a provider binding may use; an http binding "
                    "has no account: remove it"
                )
            if self.capability is not None or self.account is not None or self.settings:
                raise ValueError(
                    "'capability', 'account' and 'settings' belong to provider bindings: add "
                    '"kind": "provider" or remove them'
                )
        else:
            if self.capability is None or self.account is None:
                raise ValueError(
                    "a provider binding needs 'capability' (e.g. \"slack.post_message\") and 'account'"
                )
            if self.request is not None:
                raise ValueError("a provider binding builds its request from 'settings'; remove 'request'")
        return self


class Universe(Model):
    cosmogen: Literal["universe/1"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: str | None = None
    nodes: list[Node]
    edges: list[Edge] = Field(default_factory=list)
    bindings: list[Binding] = Field(default_factory=list)
    viewport: dict[str, float] | None = None

    def node(self, node_id: str) -> Node | None:
        for node in self.nodes:
            if node.id == node_id:
                return node
        return None
