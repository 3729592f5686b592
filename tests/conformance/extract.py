"""Regenerate ``openai-openapi.subset.json`` from OpenAI's whole document:

    python -m tests.conformance.extract /path/to/openai-openapi.json [--taken YYYY-MM-DD]

It keeps the operations Jan Server implements (``OPERATIONS``) and every component they
reference, verbatim except for the documentation-only ``x-oaiMeta`` blocks (examples
for OpenAI's own reference pages), and records where the document came from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SUBSET = Path(__file__).with_name("openai-openapi.subset.json")
SOURCE = "https://github.com/openai/openai-openapi (openapi.json)"

# (path in OpenAI's document, method): what Jan Server serves under /v1.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "post"),
    ("/chat/completions", "get"),
    ("/chat/completions/{completion_id}", "get"),
    ("/chat/completions/{completion_id}", "post"),
    ("/chat/completions/{completion_id}", "delete"),
    ("/chat/completions/{completion_id}/messages", "get"),
    ("/completions", "post"),
    ("/embeddings", "post"),
    ("/models", "get"),
    ("/models/{model}", "get"),
    ("/moderations", "post"),
    ("/audio/speech", "post"),
    ("/audio/transcriptions", "post"),
    ("/audio/translations", "post"),
    ("/images/generations", "post"),
    ("/images/edits", "post"),
    ("/responses", "post"),
    ("/responses/input_tokens", "post"),
    ("/responses/{response_id}", "get"),
    ("/responses/{response_id}", "delete"),
    ("/responses/{response_id}/cancel", "post"),
    ("/responses/{response_id}/input_items", "get"),
    ("/conversations", "post"),
    ("/conversations/{conversation_id}", "get"),
    ("/conversations/{conversation_id}", "post"),
    ("/conversations/{conversation_id}", "delete"),
    ("/conversations/{conversation_id}/items", "get"),
    ("/conversations/{conversation_id}/items", "post"),
    ("/conversations/{conversation_id}/items/{item_id}", "get"),
    ("/conversations/{conversation_id}/items/{item_id}", "delete"),
    ("/organization/admin_api_keys", "get"),
    ("/organization/admin_api_keys", "post"),
    ("/organization/admin_api_keys/{key_id}", "get"),
    ("/organization/admin_api_keys/{key_id}", "delete"),
    ("/organization/audit_logs", "get"),
    ("/organization/costs", "get"),
    ("/organization/data_retention", "get"),
    ("/organization/data_retention", "post"),
    ("/organization/invites", "get"),
    ("/organization/invites", "post"),
    ("/organization/invites/{invite_id}", "get"),
    ("/organization/invites/{invite_id}", "delete"),
    ("/organization/projects", "get"),
    ("/organization/projects", "post"),
    ("/organization/projects/{project_id}", "get"),
    ("/organization/projects/{project_id}", "post"),
    ("/organization/projects/{project_id}/api_keys", "get"),
    ("/organization/projects/{project_id}/api_keys/{api_key_id}", "get"),
    ("/organization/projects/{project_id}/api_keys/{api_key_id}", "delete"),
    ("/organization/projects/{project_id}/archive", "post"),
    ("/organization/projects/{project_id}/data_retention", "get"),
    ("/organization/projects/{project_id}/data_retention", "post"),
    ("/organization/projects/{project_id}/model_permissions", "get"),
    ("/organization/projects/{project_id}/model_permissions", "post"),
    ("/organization/projects/{project_id}/model_permissions", "delete"),
    ("/organization/projects/{project_id}/rate_limits", "get"),
    ("/organization/projects/{project_id}/rate_limits/{rate_limit_id}", "post"),
    ("/organization/projects/{project_id}/service_accounts", "get"),
    ("/organization/projects/{project_id}/service_accounts", "post"),
    ("/organization/projects/{project_id}/service_accounts/{service_account_id}", "get"),
    ("/organization/projects/{project_id}/service_accounts/{service_account_id}", "delete"),
    ("/organization/projects/{project_id}/spend_alerts", "get"),
    ("/organization/projects/{project_id}/spend_alerts", "post"),
    ("/organization/projects/{project_id}/spend_alerts/{alert_id}", "get"),
    ("/organization/projects/{project_id}/spend_alerts/{alert_id}", "post"),
    ("/organization/projects/{project_id}/spend_alerts/{alert_id}", "delete"),
    ("/organization/projects/{project_id}/spend_limit", "get"),
    ("/organization/projects/{project_id}/spend_limit", "post"),
    ("/organization/projects/{project_id}/spend_limit", "delete"),
    ("/organization/projects/{project_id}/users", "get"),
    ("/organization/projects/{project_id}/users", "post"),
    ("/organization/projects/{project_id}/users/{user_id}", "get"),
    ("/organization/projects/{project_id}/users/{user_id}", "post"),
    ("/organization/projects/{project_id}/users/{user_id}", "delete"),
    ("/organization/spend_alerts", "get"),
    ("/organization/spend_alerts", "post"),
    ("/organization/spend_alerts/{alert_id}", "get"),
    ("/organization/spend_alerts/{alert_id}", "post"),
    ("/organization/spend_alerts/{alert_id}", "delete"),
    ("/organization/spend_limit", "get"),
    ("/organization/spend_limit", "post"),
    ("/organization/spend_limit", "delete"),
    ("/organization/usage/completions", "get"),
    ("/organization/usage/embeddings", "get"),
    ("/organization/users", "get"),
    ("/organization/users/{user_id}", "get"),
    ("/organization/users/{user_id}", "post"),
    ("/organization/users/{user_id}", "delete"),
)
_DROPPED = ("x-oaiMeta",)
# Errors of every operation: what an undocumented status is checked against.
_ALWAYS = ("#/components/schemas/ErrorResponse",)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in _DROPPED}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any, document: dict[str, Any], seen: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value not in seen:
                seen.add(value)
                _refs(_resolve(document, value), document, seen)
            else:
                _refs(value, document, seen)
    elif isinstance(node, list):
        for value in node:
            _refs(value, document, seen)


def subset(document: dict[str, Any], taken: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method in OPERATIONS:
        paths.setdefault(path, {})[method] = _strip(document["paths"][path][method])
    seen: set[str] = set()
    _refs([paths, [{"$ref": r} for r in _ALWAYS]], document, seen)
    components: dict[str, dict[str, Any]] = {}
    for ref in sorted(seen):
        _, section, name = ref.removeprefix("#/").split("/")
        components.setdefault(section, {})[name] = _strip(_resolve(document, ref))
    info = document["info"]
    return {
        "openapi": document["openapi"],
        "info": {
            "title": info["title"],
            "version": info["version"],
            "license": info.get("license"),
            "x-jan-source": SOURCE,
            "x-jan-taken": taken,
            "x-jan-note": "A subset: the operations Jan Server implements and the "
            "components they reference (tests/conformance/extract.py).",
        },
        "paths": paths,
        "components": components,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document", type=Path)
    parser.add_argument("--taken", default="2026-12-04", help="when the document was taken")
    args = parser.parse_args()
    document = json.loads(args.document.read_text())
    text = json.dumps(subset(document, args.taken), indent=1, sort_keys=True, ensure_ascii=False)
    SUBSET.write_text(text + "\n")
    print(f"{SUBSET}: {len(text)} characters")


if __name__ == "__main__":
    main()
