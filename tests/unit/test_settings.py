"""Settings: environment, TOML file, validation that stops start-up, secrets kept secret."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from fleetward.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FLEETWARD_") and name != "FLEETWARD_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir == Path("var")
    assert settings.redis_url is None  # in-process caches
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/var/fleetward.db"


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETWARD_HOST", "0.0.0.0")  # noqa: S104 - a value, not a bind
    monkeypatch.setenv("FLEETWARD_PORT", "9100")
    monkeypatch.setenv("FLEETWARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLEETWARD_DATABASE_URL", "postgresql://fw:pw@db:5432/fleetward")
    monkeypatch.setenv("FLEETWARD_REDIS_URL", "redis://:sesame@cache:6379/0")
    settings = load_settings()
    assert settings.port == 9100
    assert settings.resolved_database_url == "postgresql+asyncpg://fw:pw@db:5432/fleetward"
    # Secrets never show in reprs (and so never in logs of the settings object).
    assert "pw@" not in repr(settings) and "sesame" not in repr(settings)


def test_toml_file_with_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "fleetward.toml"
    config.write_text('port = 9200\nhost = "127.0.0.2"\n', encoding="utf-8")
    monkeypatch.setenv("FLEETWARD_CONFIG", str(config))
    monkeypatch.setenv("FLEETWARD_PORT", "9300")
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.2", 9300)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"FLEETWARD_PORT": "70000"}, "FLEETWARD_PORT"),
        ({"FLEETWARD_PORT": "eighty"}, "FLEETWARD_PORT"),
        ({"FLEETWARD_DATABASE_URL": "mysql://x/y"}, "FLEETWARD_DATABASE_URL"),
        ({"FLEETWARD_REDIS_URL": "http://cache"}, "FLEETWARD_REDIS_URL"),
        # A weaker password hash than the floor is a misconfiguration, not a choice.
        ({"FLEETWARD_PASSWORD_HASH_MEMORY_KIB": "1024"}, "PASSWORD_HASH_MEMORY_KIB"),
        ({"FLEETWARD_LOG_LEVEL": "CHATTY"}, "FLEETWARD_LOG_LEVEL"),
        ({"FLEETWARD_HOST": " "}, "FLEETWARD_HOST"),
        # MQTT is TLS with client certificates or nothing: a broker host alone is refused.
        ({"FLEETWARD_MQTT_BROKER_HOST": "127.0.0.1"}, "mqtt_client_certificate"),
        # The session-opening budget is a quota token bucket: a full refill within a day.
        (
            {
                "FLEETWARD_GATEWAY_HANDSHAKE_BURST": "10",
                "FLEETWARD_GATEWAY_HANDSHAKE_REFILL_SECONDS": "86400",
            },
            "gateway_handshake_burst",
        ),
    ],
)
def test_invalid_settings_stop_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=needle):
        load_settings()


PRODUCTION_KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="  # a test fixture


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        # Tokens and passkeys over plain http, or no public URL at all (an issuer of
        # http://127.0.0.1:8000 in front of real cars).
        ({"FLEETWARD_PUBLIC_URL": "http://fleetward.example.com"}, "public_url"),
        ({"FLEETWARD_PUBLIC_URL": None}, "public_url"),
        # A data key generated on one machine's disk: replicas would not share it.
        ({"FLEETWARD_DATA_KEY": None}, "data_key"),
        ({"FLEETWARD_LOG_LEVEL": "DEBUG"}, "log_level"),
    ],
)
def test_production_refuses_what_suits_a_developer_machine(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None], needle: str
) -> None:
    complete = {
        "FLEETWARD_ENVIRONMENT": "production",
        "FLEETWARD_PUBLIC_URL": "https://fleetward.example.com",
        "FLEETWARD_DATA_KEY": PRODUCTION_KEY,
    }
    for key, value in {**complete, **env}.items():
        if value is not None:
            monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=needle) as raised:
        load_settings()
    assert PRODUCTION_KEY not in str(raised.value)


def test_complete_production_settings_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETWARD_ENVIRONMENT", "production")
    monkeypatch.setenv("FLEETWARD_PUBLIC_URL", "https://fleetward.example.com")
    monkeypatch.setenv("FLEETWARD_DATA_KEY", PRODUCTION_KEY)
    assert load_settings().environment == "production"
    # The same gaps are fine on a developer's machine.
    monkeypatch.setenv("FLEETWARD_ENVIRONMENT", "development")
    monkeypatch.delenv("FLEETWARD_DATA_KEY")
    monkeypatch.setenv("FLEETWARD_PUBLIC_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("FLEETWARD_LOG_LEVEL", "DEBUG")
    assert load_settings().environment == "development"


@pytest.mark.parametrize(
    "url",
    [
        "fleetward.example.com",  # no scheme: the issuer and the WebAuthn origin need one
        "ftp://fleetward.example.com",
        "https://",  # no host
        "https://fleetward.example.com/?tenant=x",  # a query or fragment is no issuer
        "https://fleetward.example.com/#top",
        "https://admin:topsecret@fleetward.example.com",  # credentials published as issuer
        "https://fleetward.example.com:99999",  # no such port
    ],
)
def test_a_malformed_public_url_stops_start(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    # The public URL is the token issuer, the DPoP URL and the WebAuthn origin: a malformed
    # one must stop start-up, not start a platform whose every sign-in fails with a 500.
    monkeypatch.setenv("FLEETWARD_PUBLIC_URL", url)
    with pytest.raises(SettingsError, match="FLEETWARD_PUBLIC_URL") as raised:
        load_settings()
    assert "topsecret" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    ["https://fleetward.example.com", "http://127.0.0.1:8000", "https://example.com/fleetward"],
)
def test_a_well_formed_public_url_is_the_base_url(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("FLEETWARD_PUBLIC_URL", url)
    assert load_settings().base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://fw:topsecret@db:notaport/fleetward",  # the engine could not be built
        "postgresql://fw:topsecret@db:5432:1/fleetward",
        "sqlite:///",  # no file: an in-memory store per connection, gone at every restart
        "sqlite:///:memory:",
    ],
)
def test_an_unusable_database_url_stops_start(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    # Refused with the field named, not a traceback from the engine at start-up (or a
    # platform that starts on a store nothing persists to); the password is never echoed.
    monkeypatch.setenv("FLEETWARD_DATABASE_URL", url)
    with pytest.raises(SettingsError, match="FLEETWARD_DATABASE_URL") as raised:
        load_settings()
    assert "topsecret" not in str(raised.value)


def test_invalid_database_url_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETWARD_DATABASE_URL", "mysql://u:topsecret@h/d")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "topsecret" not in str(raised.value)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize(
    "key",
    [
        "topsecret not base64!",  # not base64 at all
        _b64(b"topsecret" * 4)[:-3] + "!!!",  # a character outside the alphabet
        _b64(b"topsecret" * 4).rstrip("="),  # padding missing
        _b64(b"topsecret-16byte"),  # 16 bytes: an AES-128 key is not the data key
        _b64(b"topsecret" * 4),  # 36 bytes
        "",
        "t\u00f6psecret" * 4,  # not ASCII
    ],
    ids=["not-base64", "bad-char", "no-padding", "16-bytes", "36-bytes", "empty", "non-ascii"],
)
def test_a_malformed_data_key_stops_start(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    # The data key encrypts TOTP seeds and the signing keys: a malformed one must stop start-up
    # with the field named, not a traceback from deep in the identity runtime, and the message
    # must never repeat the key (or any part of it).
    monkeypatch.setenv("FLEETWARD_DATA_KEY", key)
    with pytest.raises(SettingsError, match="FLEETWARD_DATA_KEY") as raised:
        load_settings()
    assert "topsecret" not in str(raised.value) and "dG9wc2VjcmV0" not in str(raised.value)
    if key:
        assert key not in str(raised.value)


def test_a_well_formed_data_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    key = _b64(bytes(range(32)))
    monkeypatch.setenv("FLEETWARD_DATA_KEY", key)
    settings = load_settings()
    assert settings.data_key is not None and settings.data_key.get_secret_value() == key
    assert key not in repr(settings)


def test_unknown_key_in_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "fleetward.toml"
    config.write_text("prot = 1\n", encoding="utf-8")  # a typo must not be silently ignored
    monkeypatch.setenv("FLEETWARD_CONFIG", str(config))
    with pytest.raises(SettingsError, match="prot"):
        load_settings()


def test_missing_and_malformed_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETWARD_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(SettingsError, match="no such file"):
        load_settings()
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n", encoding="utf-8")
    monkeypatch.setenv("FLEETWARD_CONFIG", str(broken))
    with pytest.raises(SettingsError, match="settings file"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]
