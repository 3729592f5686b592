"""The rendered Gateway on this machine: one local port per listener, routing as the
rendered HTTPRoutes say (hostnames, Exact and PathPrefix matches with Gateway API
precedence, RequestRedirect, URLRewrite's hostname, request timeouts) to their backendRefs.
A backendRef must be a Service that exists: rendered, or applied by the README's install
outline (schemas/installed/). Knative's local gateway picks the Knative Service by Host and
forwards to its pod (cluster.Overlay). The HTTPS listener is served as plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.manifests.cluster import ClusterError, Overlay, free_port, installed_objects
from tests.manifests.support import Obj, group_of, of_kind

# knative-extensions/net-gateway-api config/config-gateway.yaml: the local gateway (Istio)
KNATIVE_LOCAL_GATEWAY = ("istio-system", "knative-local-gateway")


@dataclass(frozen=True)
class Rule:
    route: str
    matches: tuple[tuple[str, str], ...]  # (Exact|PathPrefix, value)
    filters: tuple[Obj, ...]
    backends: tuple[Obj, ...]
    timeout: float | None
    namespace: str


def _path_matches(kind: str, value: str, path: str) -> bool:
    if kind == "Exact":
        return path == value
    if kind == "PathPrefix":  # element-wise: /v1/chat matches /v1/chat/x, not /v1/chatx
        prefix = value.rstrip("/")
        return path == prefix or path.startswith(prefix + "/") or prefix == ""
    raise ClusterError(f"path match {kind} not emulated")


class Gateway:
    """The rendered Gateway's listeners, each on a local port, routing as its HTTPRoutes say."""

    def __init__(self, objs: list[Obj], overlay: Overlay) -> None:
        self.overlay = overlay
        self.services = {
            (o["metadata"].get("namespace", overlay.namespace), o["metadata"]["name"]): o
            for o in [*objs, *installed_objects()]
            if o.get("kind") == "Service" and group_of(o) == ""
        }
        self.pods_labels = [
            o["metadata"].get("labels", {}) for o in installed_objects() if o["kind"] == "Pod"
        ]
        (self.gateway,) = of_kind(objs, "Gateway")
        self.listeners = {lst["name"]: lst for lst in self.gateway["spec"]["listeners"]}
        self.routes = of_kind(objs, "HTTPRoute")
        self.ports = {name: free_port() for name in self.listeners}
        self.knative_hosts: dict[str, int] = {}
        for pod in overlay.pods:
            if pod.name.startswith("Service/") and pod.port is not None:
                self.knative_hosts.update({h: pod.port for h, _ in pod.hosts})
        for listener in self.listeners:  # fail now, not on the first request
            for _, rule in self._rules(listener):
                for backend in rule.backends:
                    self._backend(backend, rule.namespace)

    def _rules(self, listener: str) -> list[tuple[tuple[str, ...], Rule]]:
        found: list[tuple[tuple[str, ...], Rule]] = []
        for route in self.routes:
            ns = route["metadata"]["namespace"]
            attached = any(
                p["name"] == self.gateway["metadata"]["name"]
                and p.get("sectionName", listener) == listener
                for p in route["spec"]["parentRefs"]
            )
            if not attached:
                continue
            hostnames = tuple(route["spec"].get("hostnames", ()))
            for rule in route["spec"].get("rules", []):
                matches = tuple(
                    (
                        m.get("path", {}).get("type", "PathPrefix"),
                        m.get("path", {}).get("value", "/"),
                    )
                    for m in rule.get("matches", [{}])
                )
                timeout = rule.get("timeouts", {}).get("request")
                seconds = float(timeout.rstrip("s")) if timeout else None
                found.append(
                    (
                        hostnames,
                        Rule(
                            route["metadata"]["name"],
                            matches,
                            tuple(rule.get("filters", [])),
                            tuple(rule.get("backendRefs", [])),
                            seconds,
                            ns,
                        ),
                    )
                )
        return found

    def _backend(self, ref: Obj, namespace: str) -> tuple[str, str]:
        key = (ref.get("namespace", namespace), ref["name"])
        svc = self.services.get(key)
        if svc is None:
            raise ClusterError(
                f"backendRef Service {key[0]}/{key[1]} does not exist: it is neither rendered "
                "nor applied by the install outline (manifests/README.md)"
            )
        if ref.get("port") not in [p["port"] for p in svc["spec"]["ports"]]:
            raise ClusterError(f"backendRef {key}: no port {ref.get('port')}")
        selector = svc["spec"].get("selector", {})
        if key == KNATIVE_LOCAL_GATEWAY and not any(
            all(labels.get(k) == v for k, v in selector.items()) for labels in self.pods_labels
        ):
            raise ClusterError(
                f"Service {key[0]}/{key[1]} selects {selector}: no such pods (the install "
                "outline's Istio profile installs no ingress gateway)"
            )
        return key

    def route(self, listener: str, host: str, path: str) -> tuple[Rule, str] | None:
        """The rule a request takes (Gateway API precedence: Exact, then the longest
        PathPrefix) and the match that won; None: 404."""
        host = host.split(":")[0].lower()
        best: tuple[tuple[int, int], Rule, str] | None = None
        for hostnames, rule in self._rules(listener):
            if hostnames and host not in hostnames:
                continue
            for kind, value in rule.matches:
                if _path_matches(kind, value, path):
                    rank = (1 if kind == "Exact" else 0, len(value))
                    if best is None or rank > best[0]:
                        best = (rank, rule, value)
        return None if best is None else (best[1], best[2])

    async def handle(self, listener: str, request: web.Request) -> web.StreamResponse:
        found = self.route(listener, request.host, request.path)
        if found is None:
            return web.Response(status=404, text="no route")
        rule, _ = found
        host = request.host
        for f in rule.filters:
            if f["type"] == "RequestRedirect":
                redirect = f["requestRedirect"]
                scheme = redirect.get("scheme", request.scheme)
                hostname = redirect.get("hostname", host.split(":")[0])
                location = f"{scheme}://{hostname}{request.path_qs}"
                return web.Response(
                    status=redirect.get("statusCode", 302), headers={"Location": location}
                )
            if f["type"] == "URLRewrite":
                if "path" in f["urlRewrite"]:
                    raise ClusterError("URLRewrite.path not emulated")
                host = f["urlRewrite"].get("hostname", host)
            else:
                raise ClusterError(f"filter {f['type']} not emulated")
        (backend,) = rule.backends
        if self._backend(backend, rule.namespace) != KNATIVE_LOCAL_GATEWAY:
            raise ClusterError("only Knative's local gateway is emulated as a backend")
        port = self.knative_hosts.get(host.split(":")[0])
        if port is None:  # Knative's local gateway knows no such Knative Service
            return web.Response(status=404, text=f"no Knative Service for host {host}")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        headers["Host"] = host
        body = await request.read()
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=rule.timeout), auto_decompress=False
            ) as session,
            session.request(
                request.method,
                f"http://127.0.0.1:{port}{request.path_qs}",
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream,
        ):
            response = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    response.headers.add(k, v)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    @contextlib.contextmanager
    def serving(self) -> Iterator[dict[str, int]]:
        """The listeners on their local ports (listener name: port), in a thread."""
        loop = asyncio.new_event_loop()
        runners: list[web.AppRunner] = []

        async def start() -> None:
            for name, port in self.ports.items():
                app = web.Application()

                async def handler(request: web.Request, listener: str = name) -> web.StreamResponse:
                    return await self.handle(listener, request)

                app.router.add_route("*", "/{tail:.*}", handler)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                runners.append(runner)

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        try:
            yield dict(self.ports)
        finally:

            async def stop() -> None:
                for runner in runners:
                    await runner.cleanup()

            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
