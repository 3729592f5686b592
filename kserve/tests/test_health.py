"""KServe V2 health, Prometheus metrics, settings and the command line."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from jan_predictor import Settings, create_app, embeddings
from jan_predictor.__main__ import _parse_args
from jan_predictor.settings import smollm2_gguf_path, usable_cpus
from tests.conftest import EMBEDDING_MODEL, MODEL, make_settings, running

pytestmark = pytest.mark.anyio


async def test_ready_only_once_the_model_is_loaded() -> None:
    app = create_app(make_settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://predictor") as before:
        # No lifespan has run: nothing is loaded yet.
        assert (await before.get("/v2/health/live")).status_code == 200
        assert (await before.get("/v2/health/ready")).status_code == 503
        assert (await before.get(f"/v2/models/{MODEL}/ready")).status_code == 503
        chat = await before.post(
            "/openai/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )
        assert chat.status_code == 503
        assert chat.json()["error"]["code"] == "model_not_ready"
        assert "retry-after" in chat.headers
        assert (await before.get(f"/v2/models/{EMBEDDING_MODEL}/ready")).status_code == 503
        embed = await before.post("/openai/v1/embeddings", json={"input": "x"})
        assert embed.status_code == 503
        assert embed.json()["error"]["code"] == "model_not_ready"
        assert "retry-after" in embed.headers

    async with running(app) as client:
        live = await client.get("/v2/health/live")
        assert live.status_code == 200
        assert live.json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True}
        model = await client.get(f"/v2/models/{MODEL}/ready")
        assert model.json() == {"name": MODEL, "ready": True}
        embedding = await client.get(f"/v2/models/{EMBEDDING_MODEL}/ready")
        assert embedding.json() == {"name": EMBEDDING_MODEL, "ready": True}
        assert (await client.get("/v2/models/other/ready")).status_code == 404


async def test_a_model_that_fails_to_load_is_never_ready(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf")
    async with running(create_app(make_settings(model_path=broken))) as client:
        assert (await client.get("/v2/health/ready")).status_code == 503
        live = await client.get("/v2/health/live")
        assert live.status_code == 503
        assert str(broken) not in live.text
        chat = await client.post("/openai/v1/completions", json={"prompt": "x"})
        assert chat.status_code == 503


async def test_an_embedding_model_that_fails_to_load_is_never_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    monkeypatch.setattr(embeddings, "wordllama_files", lambda: (broken, broken))
    async with running(create_app(make_settings())) as client:
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get(f"/v2/models/{MODEL}/ready")).status_code == 200
        assert (await client.get(f"/v2/models/{EMBEDDING_MODEL}/ready")).status_code == 503
        live = await client.get("/v2/health/live")
        assert live.status_code == 503
        assert str(broken) not in live.text
        embed = await client.post("/openai/v1/embeddings", json={"input": "x"})
        assert embed.status_code == 503


async def test_metrics(client: httpx.AsyncClient) -> None:
    await client.post("/openai/v1/completions", json={"prompt": "Hello", "max_tokens": 4})
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in [
        "jan_predictor_queue_depth 0.0",
        "jan_predictor_busy_instances 0.0",
        "jan_predictor_instances 2.0",
        "jan_predictor_ready 1.0",
        f'jan_predictor_requests_total{{endpoint="completions",model="{MODEL}",status="200"}} 1.0',
        f'jan_predictor_completion_tokens_total{{model="{MODEL}"}} 4.0',
        f'jan_predictor_time_to_first_token_seconds_count{{model="{MODEL}"}} 1.0',
        f'jan_predictor_tokens_per_second_count{{model="{MODEL}"}} 1.0',
        f'jan_predictor_generations_cancelled_total{{model="{MODEL}"}} 0.0',
    ]:
        assert line in text, line
    assert f'jan_predictor_prompt_tokens_total{{model="{MODEL}"}} 0.0' not in text


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["PORT", "PREDICTOR_PORT", "PREDICTOR_INSTANCES", "PREDICTOR_MODEL_NAME"]:
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.port == 8101
    assert settings.host == "0.0.0.0"
    assert settings.model_name == MODEL
    assert settings.instances >= 1
    assert settings.threads_per_instance == 1
    assert settings.default_system_prompt
    assert settings.resolved_model_path() == smollm2_gguf_path()
    assert smollm2_gguf_path().suffix == ".gguf"

    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("PREDICTOR_INSTANCES", "3")
    monkeypatch.setenv("PREDICTOR_DEFAULT_SYSTEM_PROMPT", "")
    settings = Settings()
    assert (settings.port, settings.instances, settings.default_system_prompt) == (9000, 3, "")


def test_usable_cpus_honours_a_cgroup_quota(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path) >= 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == usable_cpus(tmp_path / "none")
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(v1) == 1


def test_kserve_command_line_flags() -> None:
    args, unknown = _parse_args(["--http_port", "8085", "--model_name", "m", "--workers", "1"])
    assert (args.port, args.model_name, args.host) == (8085, "m", None)
    assert unknown == ["--workers", "1"]
