"""The operations API (aiohttp): inspect and steer the strategies of one or more nodes over HTTP.

Every state-changing route calls the same function as the operator's CLI (governance overrides:
``actors.registry.submit_operator_override``; model lifecycle:
``actors.promote.submit_lifecycle_request``; kill switch: ``actors.kill_switch.switch_on`` /
``switch_off``), so a call over HTTP leaves exactly the file, and later the registry decision or
lifecycle event, the CLI would. The node applies it at its next poll, as it does for the CLI.

Security: a state-changing route needs ``Authorization: Bearer <token>``, the token coming only from
``OPS_API_TOKEN`` in the API's environment and compared with ``hmac.compare_digest``. Without a
token configured those routes answer 403 (off). A missing or wrong token gets 401, changes
nothing and counts in ``ops_api_unauthorized_total``. The token and the Authorization header are
never logged. Read routes are as open as the node's own ``/metrics`` (loopback by default).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from actors.kill_switch import switch_off, switch_on, switch_state
from actors.model_lifecycle import read_lifecycle
from actors.promote import submit_lifecycle_request, target_of
from actors.registry import (
    ACTIONS,
    RegistryDocument,
    RegistryError,
    read_registry,
    submit_operator_override,
)
from hmm_strategy.cli import one_line
from hmm_strategy.config import ConfigError
from ops import aggregate
from ops.node import NodeTarget

TOKEN_ENV = "OPS_API_TOKEN"
MAX_BODY_BYTES = 64 * 1024
SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MODEL_ACTIONS = ("promote", "reject", "rollback")
LAST_DECISIONS = 20
log = logging.getLogger("ops.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GovernanceBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str
    operator: str | None = None
    scale: float | None = None  # throttle (default 0.5) / resume (default 1.0)
    flatten: bool = False  # pause: also close the position (retire always does)
    force: bool = False  # a strategy the registry does not know yet


class ModelBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str
    operator: str | None = None
    model: str | None = None  # promote/rollback: this artifact (a path on the node's machine)
    to: str | None = None  # rollback: this recorded version


class KillSwitchBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str = ""
    operator: str | None = None
    flatten: bool = False


class OpsState:
    """What the handlers share: the nodes, the token and the API's own metrics."""

    def __init__(
        self, nodes: list[NodeTarget], token: str | None, scrape_only: dict[str, str]
    ) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.token = token or None  # an empty OPS_API_TOKEN is no token
        self.fleet = {n.name: n.metrics_url for n in nodes if n.metrics_url} | scrape_only
        self.registry = CollectorRegistry()
        self.unauthorized = Counter(
            "ops_api_unauthorized_total",
            "State-changing calls refused for a missing or wrong bearer token (nothing changed).",
            ("route",),
            registry=self.registry,
        )
        self.actions = Counter(
            "ops_api_actions_total",
            "Authorized state-changing calls, by action and result (queued or refused).",
            ("action", "result"),
            registry=self.registry,
        )


STATE = web.AppKey("ops_state", OpsState)


def _json(data: Any, status: int = 200, **kw) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json", **kw
    )


def _error(status: int, message: str, **kw) -> web.Response:
    return _json({"error": one_line(message)}, status, **kw)


def _http(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error to raise, with the same JSON body as ``_error``."""
    body = msgspec.json.encode({"error": one_line(message)}).decode()
    return kind(text=body, content_type="application/json")


def _bearer_ok(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    # compare_digest on bytes: constant time in the content (a length mismatch is still False)
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def guarded(handler: Handler) -> Handler:
    """State-changing route: off without a token, 401 (counted, nothing done) on a wrong one."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        route = request.match_info.route.resource.canonical
        if state.token is None:
            return _error(403, f"state-changing routes are off: {TOKEN_ENV} is not set")
        if not _bearer_ok(request.headers.get("Authorization"), state.token):
            state.unauthorized.labels(route).inc()
            log.warning(f"refused {request.method} {route} from {request.remote}: bad token")
            return _error(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            response = await handler(request)
        except web.HTTPClientError as exc:  # refused input: the operator's log says why
            log.warning(f"refused {request.method} {route} ({exc.status}): {exc.text}")
            raise
        if 400 <= response.status < 500:
            text = response.body.decode() if isinstance(response, web.Response) else ""
            log.warning(f"refused {request.method} {route} ({response.status}): {text}")
        return response


    return wrapped


async def _body[T](request: web.Request, kind: type[T]) -> T:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _http(web.HTTPBadRequest, f"request body: {exc}") from None


def _operator(given: str | None) -> str:
    """Who, as recorded: the caller's name with the channel (the token holder is not a person)."""
    if given is None:
        return "ops-api"
    if not SAFE_ID.match(given):
        raise _http(web.HTTPBadRequest, "operator must match [A-Za-z0-9_.-]{1,64}")
    return f"{given}@ops-api"


# -- reading ------------------------------------------------------------------------------------


def _read_registry(node: NodeTarget) -> tuple[RegistryDocument | None, str | None]:
    if node.registry_path is None:
        return None, "no governance actor"
    if not node.registry_path.exists():
        return None, "no registry yet (the node has not recorded anything)"
    try:
        return read_registry(node.registry_path), None
    except RegistryError as exc:
        return None, one_line(exc)


def _by_strategy(samples: list[tuple[str, dict, float]]) -> dict[str, dict[str, Any]]:
    """The node's metrics per strategy: regime, PnL, exposure, budget, breakers, model."""
    out: dict[str, dict[str, Any]] = {}
    for name, labels, value in samples:
        sid = labels.get("strategy")
        if sid is None:
            continue
        s = out.setdefault(sid, {"pnl": {"realized": 0.0, "unrealized": 0.0}, "breakers": {}})
        if name == "pnl_realized_total":
            s["pnl"]["realized"] += value
        elif name == "pnl_unrealized_total":
            s["pnl"]["unrealized"] += value
        elif name == "exposure_usd":
            s["exposure_usd"] = s.get("exposure_usd", 0.0) + value
        elif name == "regime_state":
            s["regime"] = {"instrument": labels.get("instrument"), "state": int(value)}
        elif name == "target_exposure":
            s["target_exposure"] = value
        elif name == "strategy_allocation_notional":
            s["budget"] = value
        elif name == "breaker_rejections_total":
            s["breakers"][labels.get("reason", "other")] = value
        elif name == "model_info" and value:
            s["model_version_in_use"] = labels.get("model_version")
    return out


def _strategy_view(node: NodeTarget, sid: str, doc, metrics: dict, *, detail: bool) -> dict:
    rec = doc.strategies.get(sid) if doc is not None else None
    view: dict[str, Any] = {"node": node.name, "venue": node.venue, "strategy_id": sid}
    if rec is not None:
        last = rec.decisions[-1] if rec.decisions else None
        view |= {
            "state": rec.state,
            "manual_override": msgspec.to_builtins(rec.manual) if rec.manual else None,
            "scale": rec.scale,
            "model_version": rec.model_version or None,
            "registry_metrics": rec.metrics,
            "last_decision": msgspec.to_builtins(last) if last else None,
        }
        if detail:
            view["decisions"] = msgspec.to_builtins(rec.decisions[-LAST_DECISIONS:])
            view["model_decisions"] = msgspec.to_builtins(rec.model_decisions[-LAST_DECISIONS:])
    view |= metrics.get(sid, {})
    return view


async def _node_status(node: NodeTarget, *, detail: bool, only: str | None = None) -> dict:
    doc, registry_note = await asyncio.to_thread(_read_registry, node)
    metrics: dict = {}
    metrics_note = None
    if node.metrics_url:
        scraped = (await aggregate.scrape_all({node.name: node.metrics_url}))[node.name]
        if isinstance(scraped, str):
            metrics_note = scraped
        else:
            metrics = _by_strategy(scraped)
    ids = sorted(set(node.strategy_ids) | set(doc.strategies if doc else ()) | set(metrics))
    strategies = [
        _strategy_view(node, sid, doc, metrics, detail=detail) for sid in ids if only in (None, sid)
    ]
    switch = (
        await asyncio.to_thread(switch_state, node.kill_switch_path)
        if node.kill_switch_path
        else None
    )
    return {
        "node": node.name,
        "trader_id": node.trader_id,
        "venue": node.venue,
        "kill_switch": switch,
        "registry": str(node.registry_path) if node.registry_path else None,
        "registry_note": registry_note,
        "metrics_url": node.metrics_url,
        "metrics_error": metrics_note,
        "strategies": strategies,
    }


def _owner(state: OpsState, request: web.Request) -> tuple[NodeTarget, str]:
    """The node running the strategy in the path (``?node=`` picks one explicitly)."""
    sid = request.match_info["strategy_id"]
    if not SAFE_ID.match(sid):
        raise _http(web.HTTPBadRequest, "strategy id must match [A-Za-z0-9_.-]{1,64}")
    wanted = request.query.get("node")
    if wanted is not None:
        if wanted not in state.nodes:
            raise _http(web.HTTPNotFound, f"unknown node {wanted!r}; known: {sorted(state.nodes)}")
        return state.nodes[wanted], sid
    owners = [n for n in state.nodes.values() if sid in n.strategy_ids]
    if not owners:
        owners = [
            n
            for n in state.nodes.values()
            if (doc := _read_registry(n)[0]) is not None and sid in doc.strategies
        ]
    if len(owners) == 1:
        return owners[0], sid
    if not owners and len(state.nodes) == 1:  # e.g. --force on a strategy not yet run
        return next(iter(state.nodes.values())), sid
    known = sorted(s for n in state.nodes.values() for s in n.strategy_ids)
    if not owners:
        raise _http(web.HTTPNotFound, f"unknown strategy {sid!r}; known: {known} (or ?node=)")
    raise _http(web.HTTPConflict, f"strategy {sid!r} runs on several nodes: add ?node=NAME")


# -- handlers ----------------------------------------------------------------------------------


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def list_strategies(request: web.Request) -> web.Response:
    state = request.app[STATE]
    nodes = await asyncio.gather(*(_node_status(n, detail=False) for n in state.nodes.values()))
    return _json({"nodes": nodes})


async def get_strategy(request: web.Request) -> web.Response:
    node, sid = _owner(request.app[STATE], request)
    status = await _node_status(node, detail=True, only=sid)
    if not status["strategies"]:
        return _error(404, f"strategy {sid!r} is not on node {node.name!r}")
    return _json({k: v for k, v in status.items() if k != "strategies"} | status["strategies"][0])


async def get_model(request: web.Request) -> web.Response:
    node, sid = _owner(request.app[STATE], request)
    try:
        target = await asyncio.to_thread(target_of, node.config, list(node.overrides), sid)
        events = await asyncio.to_thread(read_lifecycle, target.log_path)
    except (ConfigError, ValueError, OSError) as exc:
        return _error(404, str(exc))
    mine = [e for e in events if e.strategy_id == target.strategy_id]
    return _json(
        {
            "node": node.name,
            "strategy_id": target.strategy_id,
            "log": str(target.log_path),
            "events": msgspec.to_builtins(mine[-LAST_DECISIONS:]),
        }
    )


@guarded
async def governance_action(request: web.Request) -> web.Response:
    state = request.app[STATE]
    action = request.match_info["action"]
    node, sid = _owner(state, request)
    body = await _body(request, GovernanceBody)
    if node.registry_path is None:
        return _error(409, f"node {node.name!r} runs no governance actor")
    operator = _operator(body.operator)
    try:
        override, path = await asyncio.to_thread(
            submit_operator_override,
            node.registry_path,
            sid,
            action,
            body.reason,
            scale=body.scale,
            flatten=body.flatten,
            force=body.force,
            operator=operator,
        )
    except (RegistryError, ValueError, OSError, msgspec.ValidationError) as exc:
        state.actions.labels(action, "refused").inc()
        return _error(400, str(exc))
    state.actions.labels(action, "queued").inc()
    log.info(f"{operator}: {action} {sid} on {node.name} queued as override {override.id}")
    return _json(
        {
            "queued": True,
            "node": node.name,
            "override": msgspec.to_builtins(override),
            "file": str(path),
        },
        202,
    )


@guarded
async def model_action(request: web.Request) -> web.Response:
    state = request.app[STATE]
    action = request.match_info["action"]
    node, sid = _owner(state, request)
    body = await _body(request, ModelBody)
    operator = _operator(body.operator)
    try:
        target = await asyncio.to_thread(target_of, node.config, list(node.overrides), sid)
        req, path = await asyncio.to_thread(
            submit_lifecycle_request,
            target,
            action,
            body.reason,
            model=body.model,
            to=body.to,
            operator=operator,
        )
    except (ConfigError, ValueError, OSError) as exc:  # ModelArtifactError is a ValueError
        state.actions.labels(f"model_{action}", "refused").inc()
        return _error(400, str(exc))
    state.actions.labels(f"model_{action}", "queued").inc()
    log.info(f"{operator}: model {action} {sid} on {node.name} queued as request {req.id}")
    return _json(
        {"queued": True, "node": node.name, "request": msgspec.to_builtins(req), "file": str(path)},
        202,
    )


async def get_kill_switch(request: web.Request) -> web.Response:
    nodes = _switch_nodes(request)
    states = await asyncio.gather(
        *(asyncio.to_thread(switch_state, n.kill_switch_path) for n in nodes)
    )
    return _json({"nodes": {n.name: s for n, s in zip(nodes, states, strict=True)}})


def _switch_nodes(request: web.Request) -> list[NodeTarget]:
    """The nodes a kill switch call addresses: all of them, or ``?node=NAME``."""
    state = request.app[STATE]
    wanted = request.query.get("node")
    if wanted is not None and wanted not in state.nodes:
        raise _http(web.HTTPNotFound, f"unknown node {wanted!r}; known: {sorted(state.nodes)}")
    nodes = [n for n in state.nodes.values() if wanted in (None, n.name)]
    return [n for n in nodes if n.kill_switch_path is not None]


@guarded
async def kill_switch_action(request: web.Request) -> web.Response:
    state = request.app[STATE]
    action = request.match_info["action"]
    body = await _body(request, KillSwitchBody)
    operator = _operator(body.operator)
    nodes = _switch_nodes(request)
    if not nodes:
        return _error(409, "no node with a kill switch actor addressed")
    try:
        if action == "on":
            for n in nodes:
                await asyncio.to_thread(
                    switch_on,
                    n.kill_switch_path,
                    body.reason,
                    flatten=body.flatten,
                    operator=operator,
                )
        else:
            for n in nodes:
                await asyncio.to_thread(switch_off, n.kill_switch_path)
    except (ValueError, OSError) as exc:
        state.actions.labels(f"kill_switch_{action}", "refused").inc()
        return _error(400, str(exc))
    state.actions.labels(f"kill_switch_{action}", "queued").inc()
    names = [n.name for n in nodes]
    log.warning(f"{operator}: kill switch {action} on {names}: {one_line(body.reason)}")
    return _json({"queued": True, "kill_switch": action, "nodes": names}, 202)


async def aggregate_pnl(request: web.Request) -> web.Response:
    fleet = request.app[STATE].fleet
    return _json(aggregate.pnl(fleet, await aggregate.scrape_all(fleet)))


async def aggregate_exposure(request: web.Request) -> web.Response:
    fleet = request.app[STATE].fleet
    return _json(aggregate.exposure(fleet, await aggregate.scrape_all(fleet)))


def create_app(
    nodes: list[NodeTarget], *, token: str | None, scrape_only: dict[str, str] | None = None
) -> web.Application:
    """The API over ``nodes`` (steered and scraped) and ``scrape_only`` (aggregated only)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = OpsState(nodes, token, scrape_only or {})
    governance = "|".join(ACTIONS)
    app.add_routes(
        [
            web.get("/healthz", health),
            web.get("/readyz", health),
            web.get("/metrics", metrics),
            web.get("/strategy", list_strategies),
            web.get("/strategy/{strategy_id}", get_strategy),
            web.get("/strategy/{strategy_id}/model", get_model),
            web.post(f"/strategy/{{strategy_id}}/{{action:{governance}}}", governance_action),
            web.post(
                f"/strategy/{{strategy_id}}/model/{{action:{'|'.join(MODEL_ACTIONS)}}}",
                model_action,
            ),
            web.get("/killswitch", get_kill_switch),
            web.post("/killswitch/{action:on|off}", kill_switch_action),
            web.get("/aggregate/pnl", aggregate_pnl),
            web.get("/aggregate/exposure", aggregate_exposure),
        ]
    )
    return app
