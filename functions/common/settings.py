"""Configuration: read once from the environment into a typed, validated object.

Every secret (and DSN) may also be given as ``NAME_FILE`` pointing at a file that holds it,
which is how Kubernetes secrets are usually mounted. Read replicas are numbered:
``DB_POSTGRESQL_READ1_DSN``, ``DB_POSTGRESQL_READ2_DSN`` and so on.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

AREAS = ("auth", "admin", "chat", "conversations", "responses", "mcp", "console")
# Areas that serve without a database or secrets (the console: static files).
DATABASE_FREE_AREAS = frozenset({"console"})
SECRET_NAMES = ("jwt_secret", "apikey_secret", "model_provider_secret")
_URL_USERINFO = re.compile(r"^([a-z][a-z0-9+.\-]*://)[^/@]*@", re.IGNORECASE)
_READ_DSN = re.compile(r"^DB_POSTGRESQL_READ(\d+)_DSN(_FILE)?$")


class ConfigError(ValueError):
    """The configuration is unusable; the message is one line for the operator."""


class Settings(BaseSettings):
    """All of Jan Server's settings. Field names are the environment names, lower-cased."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=True)

    jan_function: str = Field("all", description="API area this instance serves, or `all`.")
    jan_data_dir: Path = Field(
        Path("data"),
        description="Where the embedded PostgreSQL and generated secrets live (local mode).",
    )
    jan_migrate_on_start: bool = Field(True, description="Apply pending migrations at start.")
    jan_embedded: bool = Field(
        False, description="Set by local mode when it started the embedded PostgreSQL."
    )
    jan_max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above)."
    )
    jan_body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest time a request may take to send its body (408 past it).",
    )
    # Graceful shutdown (functions.common.shutdown): on SIGTERM readiness says "draining"
    # while the listener still accepts, then in-flight work gets the grace, then is cut.
    jan_shutdown_drain_seconds: float = Field(
        30.0,
        ge=0,
        description="After SIGTERM, how long readiness answers 503 while the listener still "
        "accepts (Knative's queue-proxy drains for 30 s).",
    )
    jan_shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="After the listener closes, how long in-flight requests and streams "
        "may run before they are cut (a stream with an error event and [DONE]).",
    )
    jan_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    jan_commit: str = Field("unknown", description="Source commit, stamped by the image build.")
    jan_public_url: str = Field(
        "http://127.0.0.1:8080", description="Base URL clients use to reach the API."
    )

    db_postgresql_write_dsn: SecretStr | None = Field(
        None, description="Primary PostgreSQL. Unset: an embedded server in JAN_DATA_DIR."
    )
    db_postgresql_read_dsns: tuple[SecretStr, ...] = Field(
        (), description="Read replicas, from DB_POSTGRESQL_READ1_DSN, READ2 …"
    )
    db_pool_max_size: int = Field(10, gt=0)
    db_reader_recheck_seconds: float = Field(
        2.0, gt=0, description="How often a reader taken out of rotation is probed."
    )

    jwt_secret: SecretStr | None = None
    apikey_secret: SecretStr | None = None
    model_provider_secret: SecretStr | None = None

    jan_stream_idle_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest wait for the next chunk of an upstream stream (the first included).",
    )
    jan_upstream_max_event_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest event of an upstream stream (one without its end past it fails).",
    )
    jan_upstream_max_reply_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="Largest non-streamed upstream reply (a 502 past it).",
    )
    jan_upstream_max_discovery_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="Largest `/models` answer read from a model provider's endpoint.",
    )
    jan_upstream_warmup_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a model server that answers 503 (scaling from zero, loading "
        "its model) is waited for before the caller gets the 503.",
    )
    jan_stream_keepalive_seconds: float = Field(
        5.0,
        gt=0,
        description="How often a stream held while its model wakes gets an SSE comment "
        "(`: waking model`), so idle timeouts between the client and the gateway do not fire.",
    )
    jan_upstream_slow_factor: float = Field(
        3.0,
        ge=0,
        description="An endpoint whose p90 time to first byte is above this many times "
        "the p90 of the model's other endpoints is ejected as slow (0: never).",
    )
    jan_upstream_slow_min_seconds: float = Field(
        1.0,
        gt=0,
        description="How much slower than its peers' p90 (at least) an endpoint's "
        "p90 time to first byte must be to eject it.",
    )
    jan_housekeeping_interval_seconds: float = Field(
        300.0, ge=0, description="How often expired rows are swept (0: never, on this instance)."
    )
    # Retention periods in days of organizations that set none of their own (0: kept).
    jan_retention_responses_days: int = Field(
        0, ge=0, description="Days stored responses are kept (0: for ever)."
    )
    jan_retention_conversation_items_days: int = Field(
        0, ge=0, description="Days conversation items are kept (0: for ever)."
    )
    jan_retention_usage_detail_days: int = Field(
        0, ge=0, description="Days the ledger's per-request rows are kept (0: for ever)."
    )
    jan_retention_audit_log_days: int = Field(
        0, ge=0, description="Days audit log events are kept (0: for ever)."
    )
    jan_response_abandoned_after_seconds: float = Field(
        3600.0,
        gt=0,
        description="A foreground response still in progress this long after it started is "
        "marked failed (its instance stopped mid-request).",
    )
    jan_background_max_queued_per_project: int = Field(
        100,
        gt=0,
        description="Background responses a project may have queued or running at once.",
    )
    jan_background_max_queued_per_user: int = Field(
        20, gt=0, description="Background responses a user may have queued or running at once."
    )
    jan_background_max_queued_per_guest: int = Field(
        2, gt=0, description="Background responses a guest may have queued or running at once."
    )
    jan_inference_model_url: str | None = Field(
        None, description="Built-in OpenAI-compatible upstream, e.g. a KServe `/openai/v1` base."
    )
    jan_inference_model_options: dict[str, Any] = Field(
        default_factory=dict,
        description="The built-in provider's options, as JSON (a provider's `options`).",
    )
    serper_api_key: SecretStr | None = None
    serper_url: str = Field("https://google.serper.dev", description="Serper API base URL.")
    searxng_url: str | None = None
    jan_fetch_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Hosts, `.domain` suffixes or CIDRs the fetch tool may reach although private.",
    )
    jan_provider_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Hosts, `.domain` suffixes or CIDRs model providers may point at although "
        "private (comma-separated).",
    )
    jan_provider_max_base_urls: int = Field(
        16, gt=0, le=16, description="Most endpoints (base URLs) one model provider may list."
    )
    jan_provider_max_models: int = Field(
        1000, gt=0, description="Most static models one model provider may list."
    )
    jan_provider_max_discovered_models: int = Field(
        1000,
        gt=0,
        description="Most models kept from one endpoint's /models answer (the rest are dropped).",
    )
    jan_model_name_max_chars: int = Field(
        256, gt=0, description="Longest model name a provider may list or serve."
    )
    jan_providers_per_organization: int = Field(
        100, gt=0, description="Most model providers per organization, its projects' included."
    )
    jan_tool_timeout_seconds: float = Field(20.0, gt=0, description="Time limit of one tool call.")
    jan_fetch_max_bytes: int = Field(2 * 1024 * 1024, gt=0, description="Largest page fetched.")
    jan_tool_result_max_chars: int = Field(
        40_000, gt=0, description="Tool output longer than this is cut before the model sees it."
    )
    jan_tool_calls_per_day: int = Field(
        1000, ge=0, description="Default per-project daily tool-call quota (0: unlimited)."
    )
    jan_tool_calls_per_day_max: int | None = Field(
        None,
        ge=0,
        description="The most daily tool calls any project may be given (0: no ceiling, and "
        "organization owners may make a project unlimited); unset: JAN_TOOL_CALLS_PER_DAY.",
    )
    jan_guest_tool_calls_per_day: int = Field(
        50, ge=0, description="Daily tool-call quota of a guest's project (0: no guest cap)."
    )
    # --- rate limits (functions/services/limits) -------------------------------------
    jan_rate_limit_store: Literal["auto", "memory", "redis", "postgres"] = Field(
        "auto",
        description="Where instances share rate-limit counters: `redis` (REDIS_URL), "
        "`postgres` (several instances without Redis) or `memory` (one instance); `auto` "
        "picks redis with REDIS_URL, else memory with the embedded database, else postgres.",
    )
    jan_rate_limit_failure_mode: Literal["open", "closed"] = Field(
        "open",
        description="When the shared counters cannot be reached: `open` (each instance "
        "enforces the limits on its own) or `closed` (model calls are refused with 503); "
        "organizations override it.",
    )
    jan_rate_limit_default_output_tokens: int = Field(
        1024,
        ge=0,
        description="Output tokens reserved at admission for a request that names no "
        "max_tokens / max_completion_tokens / max_output_tokens.",
    )
    jan_rate_limit_refresh_seconds: float = Field(
        5.0, gt=0, description="How often an instance reloads the rate-limit definitions."
    )
    jan_spend_alert_interval_seconds: float = Field(
        30.0,
        ge=0,
        description="How often an instance serving models checks spend alerts and delivers "
        "their webhooks (0: never, on this instance).",
    )
    jan_budget_reconcile_seconds: float = Field(
        10.0,
        gt=0,
        description="How often an instance brings its budget counters down to what the "
        "usage ledger says was used.",
    )
    jan_guest_requests_per_minute: int = Field(
        20, ge=0, description="Model requests per minute of each guest user (0: unlimited)."
    )
    jan_guest_tokens_per_day: int = Field(
        100_000, ge=0, description="Tokens per day of each guest user (0: unlimited)."
    )
    # Database outages (README, Operations: "When the database is down").
    jan_auth_max_stale_seconds: float = Field(
        600.0,
        ge=0,
        description="While the database cannot be reached, a credential this instance "
        "verified at most this many seconds ago is still accepted (0: never).",
    )
    jan_usage_queue_max: int = Field(
        100_000,
        gt=0,
        description="Usage records an instance holds in memory while the database cannot "
        "take them; past it the oldest are dropped, counted and logged.",
    )
    # ----------------------------------------------------------------------------------
    oauth2_google_client_id: str | None = None
    oauth2_google_client_secret: SecretStr | None = None
    oauth2_google_redirect_url: str | None = None
    oauth2_google_issuer: str = "https://accounts.google.com"
    organization_admin_emails: Annotated[tuple[str, ...], NoDecode] = ()
    redis_url: SecretStr | None = None
    jan_trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="CIDRs of reverse proxies whose X-Forwarded-For is believed (comma-separated).",
    )
    jan_metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token /metrics requires. Unset: /metrics answers only in local "
        "embedded mode, to loopback clients.",
    )
    otel_exporter_otlp_endpoint: str | None = None
    k_service: str | None = Field(
        None, description="Set by Knative (the Service's name): this process runs in a pod."
    )

    @field_validator("jan_function")
    @classmethod
    def _known_area(cls, value: str) -> str:
        if value != "all" and value not in AREAS:
            raise ValueError(f"must be `all` or one of {', '.join(AREAS)}")
        return value

    @field_validator(
        "organization_admin_emails",
        "jan_fetch_allowed_hosts",
        "jan_provider_allowed_hosts",
        mode="before",
    )
    @classmethod
    def _split_lowercase(cls, value: Any) -> Any:
        # E-mails and host names compare case-insensitively: lower-cased once, here.
        if isinstance(value, str):
            return tuple(v.strip().lower() for v in value.split(",") if v.strip())
        return value

    @field_validator("jan_trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [n for n in value.split(",") if n.strip()]
        # Normalised here so a typo stops the start instead of silently trusting nobody.
        return tuple(str(ipaddress.ip_network(n.strip(), strict=False)) for n in value)

    @property
    def embedded_database(self) -> bool:
        return self.db_postgresql_write_dsn is None

    @property
    def oauth_redirect_url(self) -> str:
        """Where the identity provider sends users back: explicit, or under the public URL."""
        return self.oauth2_google_redirect_url or (
            self.jan_public_url.rstrip("/") + "/v1/auth/google/callback"
        )

    @property
    def areas(self) -> tuple[str, ...]:
        return AREAS if self.jan_function == "all" else (self.jan_function,)

    @property
    def uses_database(self) -> bool:
        return any(area not in DATABASE_FREE_AREAS for area in self.areas)

    def masked(self) -> dict[str, Any]:
        """Settings as a dict fit for a log line: secrets shown only as set or unset."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = "***" if value.get_secret_value() else ""
            elif isinstance(value, tuple) and value and isinstance(value[0], SecretStr):
                out[name] = ["***"] * len(value)
            elif isinstance(value, str):
                out[name] = _URL_USERINFO.sub(r"\1***@", value)  # credentials inside URLs
            else:
                out[name] = str(value) if isinstance(value, Path) else value
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _FileAndReplicaSource(settings_cls), env_settings)


class _FileAndReplicaSource(PydanticBaseSettingsSource):
    """Reads ``NAME_FILE`` variants and the numbered replica DSNs."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        environ = os.environ
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            path = environ.get(f"{name.upper()}_FILE")
            if path:
                values[name] = _read_secret_file(path, f"{name.upper()}_FILE")
        replicas: dict[int, str] = {}
        for key, raw in environ.items():
            match = _READ_DSN.match(key)
            if not match or not raw:
                continue
            replicas[int(match.group(1))] = _read_secret_file(raw, key) if match.group(2) else raw
        if replicas:
            values["db_postgresql_read_dsns"] = tuple(replicas[k] for k in sorted(replicas))
        return values


def _read_secret_file(path: str, variable: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Parse the environment once; raise ConfigError with a one-line reason."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"{where.upper()}: {first['msg']}") from None


def require_secrets(settings: Settings) -> None:
    """With an external database, secrets must be given, never generated."""
    missing = [n.upper() for n in SECRET_NAMES if getattr(settings, n) is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set when DB_POSTGRESQL_WRITE_DSN is set")
