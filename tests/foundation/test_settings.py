"""Settings: environment names, *_FILE secrets, numbered replicas, masking, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.common.settings import ConfigError, load_settings, require_secrets


def test_file_variants_and_numbered_replicas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("from-a-file\n")
    replica = tmp_path / "read2"
    replica.write_text("postgresql://replica-two/db")
    monkeypatch.setenv("JWT_SECRET_FILE", str(secret))
    monkeypatch.setenv("DB_POSTGRESQL_READ2_DSN_FILE", str(replica))
    monkeypatch.setenv("DB_POSTGRESQL_READ1_DSN", "postgresql://replica-one/db")
    monkeypatch.setenv("ORGANIZATION_ADMIN_EMAILS", "A@x.org, b@y.org")
    s = load_settings()
    assert s.jwt_secret is not None and s.jwt_secret.get_secret_value() == "from-a-file"
    assert [d.get_secret_value() for d in s.db_postgresql_read_dsns] == [
        "postgresql://replica-one/db",
        "postgresql://replica-two/db",
    ]
    assert s.organization_admin_emails == ("a@x.org", "b@y.org")
    masked = s.masked()
    assert masked["jwt_secret"] == "***"
    assert "from-a-file" not in str(masked) and "replica-one" not in str(masked)


def test_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAN_FUNCTION", "nonsense")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "JAN_FUNCTION" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("JAN_FUNCTION", "chat")
    monkeypatch.setenv("JWT_SECRET_FILE", "/nonexistent/secret")
    with pytest.raises(ConfigError, match="JWT_SECRET_FILE"):
        load_settings()


def test_external_database_requires_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POSTGRESQL_WRITE_DSN", "postgresql://db/x")
    monkeypatch.setenv("JWT_SECRET", "x")
    with pytest.raises(ConfigError, match="APIKEY_SECRET, MODEL_PROVIDER_SECRET"):
        require_secrets(load_settings())


def test_masking_hides_credentials_inside_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAN_INFERENCE_MODEL_URL", "https://user:hunter2@models.example/v1")
    masked = load_settings().masked()
    assert masked["jan_inference_model_url"] == "https://***@models.example/v1"


def test_oauth_redirect_defaults_under_the_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAN_PUBLIC_URL", "https://api.example.org/")
    assert load_settings().oauth_redirect_url == ("https://api.example.org/v1/auth/google/callback")
    monkeypatch.setenv("OAUTH2_GOOGLE_REDIRECT_URL", "https://login.example.org/cb")
    assert load_settings().oauth_redirect_url == "https://login.example.org/cb"
