"""Each overlay, rendered with kustomize, run on this machine as a cluster would run it
(tests/manifests/cluster.py, gateway.py): the migration Job's command and environment exactly as
rendered, then every Knative Service and predictor as a process, behind the rendered
Gateway's routes; the official `openai` SDK then uses it as a client would.

Before anything runs, the objects must pass the controllers' admission rules
(admission.py), as `kubectl apply` would require.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.manifests import admission
from tests.manifests.cluster import Overlay
from tests.manifests.gateway import Gateway
from tests.manifests.support import OVERLAYS, of_kind, render

EMBEDDING_MODEL = "wordllama-l2-supercat"


@pytest.fixture(scope="module", params=OVERLAYS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Overlay, Gateway]]:
    overlay_name: str = request.param
    objs = render(overlay_name)
    refused = admission.problems(objs)
    assert not refused, f"the cluster would refuse {overlay_name}: {refused}"
    overlay = Overlay(objs, Path(tmp_path_factory.mktemp(f"rendered-{overlay_name}")))
    gateway = Gateway(objs, overlay)
    with overlay.running(), gateway.serving():
        yield overlay_name, overlay, gateway


def api_listener(gateway: Gateway) -> tuple[int, dict[str, str]]:
    """The listener the API is served on (HTTPS where there is one) and the Host to send."""
    (route,) = [r for r in gateway.routes if r["metadata"]["name"] == "jan-api"]
    sections = {p.get("sectionName", "http") for p in route["spec"]["parentRefs"]}
    listener = "https" if "https" in sections else sorted(sections)[0]
    hostnames = route["spec"].get("hostnames", [])
    return gateway.ports[listener], ({"Host": hostnames[0]} if hostnames else {})


def test_openai_sdk_through_the_rendered_gateway(cluster: tuple[str, Overlay, Gateway]) -> None:
    name, overlay, gateway = cluster
    port, host = api_listener(gateway)
    base_url = f"http://127.0.0.1:{port}/v1"
    # The first admin key, as an operator gets it: `kubectl exec` into the admin area's pod.
    admin_service = "jan-admin" if name == "prod" else "jan-all"
    out = overlay.exec(
        admin_service,
        ["jan-server", "admin", "create-org", "--name", "Ops"],
    )
    admin_key = next(ln for ln in out.splitlines() if ln.startswith("sk-admin-"))
    admin = openai.OpenAI(
        base_url=base_url,
        api_key="unused",
        admin_api_key=admin_key,
        default_headers=host,
        max_retries=0,
        timeout=60,
    )
    project = admin.admin.organization.projects.create(name="rendered run")
    account = admin.admin.organization.projects.service_accounts.create(
        project.id, name="rendered run"
    )
    assert account.api_key is not None
    listed = admin.admin.organization.projects.list()
    assert project.id in [p.id for p in listed.data]

    sdk = openai.OpenAI(
        base_url=base_url,
        api_key=account.api_key.value,
        default_headers=host,
        max_retries=0,
        timeout=120,
    )
    # The CPU predictor serves a chat model and an embedding model.
    models = {m.id for m in sdk.models.list()}
    assert EMBEDDING_MODEL in models
    (model,) = models - {EMBEDDING_MODEL}
    done = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert done.choices[0].message.content
    embedded = sdk.embeddings.create(model=EMBEDDING_MODEL, input=["Say hello."], dimensions=64)
    assert len(embedded.data[0].embedding) == 64
    conversation = sdk.conversations.create(
        items=[{"type": "message", "role": "user", "content": "Remember: blue."}]
    )
    answer = sdk.responses.create(
        model=model, input="What colour?", conversation=conversation.id, max_output_tokens=16
    )
    assert answer.status == "completed" and answer.output_text
    items = sdk.conversations.items.list(conversation.id)
    assert len(items.data) >= 3  # the first message, the question and the answer
    # The web console, served by its own Service in prod, under the same base URL.
    console = httpx.get(f"http://127.0.0.1:{port}/console/", headers=host, timeout=30)
    assert console.status_code == 200 and "js/main.js" in console.text
    assert "frame-ancestors 'none'" in console.headers["content-security-policy"]


def test_plain_http_only_redirects_in_prod(cluster: tuple[str, Overlay, Gateway]) -> None:
    name, _, gateway = cluster
    if name != "prod":
        # dev serves the API on both listeners
        assert {p.get("sectionName") for r in gateway.routes for p in r["spec"]["parentRefs"]} == {
            None
        }
        return
    (route,) = [r for r in gateway.routes if r["metadata"]["name"] == "jan-api"]
    reply = httpx.get(
        f"http://127.0.0.1:{gateway.ports['http']}/v1/models",
        headers={"Host": route["spec"]["hostnames"][0]},
    )
    assert reply.status_code == 301
    assert reply.headers["location"] == f"https://{route['spec']['hostnames'][0]}/v1/models"


def test_every_knative_service_and_predictor_runs(cluster: tuple[str, Overlay, Gateway]) -> None:
    name, overlay, _ = cluster
    objs = render(name)
    expected = {
        f"Service/{s['metadata']['name']}" for s in of_kind(objs, "Service", "serving.knative.dev")
    }
    expected |= {
        f"InferenceService/{i['metadata']['name']}" for i in of_kind(objs, "InferenceService")
    }
    running = {p.name for p in overlay.pods if p.process is not None and p.process.poll() is None}
    assert expected <= running
