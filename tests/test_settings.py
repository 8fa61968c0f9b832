import pytest

from lib.core.settings import SettingsError, load_settings, mask_url, normalize_database_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg2://u:p@h:5432/db"),
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg2://u:p@h:5432/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:///x.sqlite", "sqlite:///x.sqlite"),
        ("  postgres://h/db\n", "postgresql+psycopg2://h/db"),
    ],
)
def test_normalize_database_url(url, expected):
    assert normalize_database_url(url) == expected


@pytest.mark.parametrize("url", ["", "mysql://h/db", "h:5432/db"])
def test_normalize_rejects_what_we_cannot_use(url):
    with pytest.raises(SettingsError):
        normalize_database_url(url)


def test_mask_url_hides_password_only():
    assert mask_url("postgresql://user:s3cr3t@db.example.co:5432/postgres") == "postgresql://user:***@db.example.co:5432/postgres"
    assert mask_url("sqlite:///data/x.sqlite") == "sqlite:///data/x.sqlite"


def test_env_wins_over_secrets_and_defaults():
    s = load_settings(
        env={"DATABASE_URL": "postgres://a@h/db", "BATCH_SIZE": "7"},
        secrets={"DATABASE_URL": "sqlite:///other.sqlite", "DISPLAY_TIMEZONE": "Europe/Berlin"},
    )
    assert s.database_url == "postgresql+psycopg2://a@h/db"
    assert s.batch_size == 7
    assert s.display_timezone == "Europe/Berlin"  # from secrets
    assert s.max_retries == 5  # default, spec MAX_RETRIES


def test_defaults_are_the_spec_constants():
    s = load_settings(env={}, secrets={})
    assert (s.poll_interval_s, s.max_stream_duration_s) == (30, 300)
    assert (s.max_retries, s.batch_size, s.worker_cron) == (5, 20, "*/5 * * * *")
    assert s.is_sqlite and s.database_url.endswith("data/dashboard.sqlite")


def test_bad_number_names_the_setting():
    with pytest.raises(SettingsError, match="BATCH_SIZE"):
        load_settings(env={"BATCH_SIZE": "twenty"}, secrets={})


def test_secrets_file_is_read(tmp_path):
    from lib.core.settings import read_secrets_files

    f = tmp_path / "secrets.toml"
    f.write_text('DATABASE_URL = "postgres://x@h/db"\n')
    assert read_secrets_files((f,)) == {"DATABASE_URL": "postgres://x@h/db"}
    f.write_text("not = toml = at all")
    with pytest.raises(SettingsError, match="not valid TOML"):
        read_secrets_files((f,))


def test_mask_url_uses_sqlalchemys_parser_for_awkward_passwords():
    # '#', '/', '?' and '@' in a password were shown whole by a urlsplit-based mask
    for url, secret in [
        ("postgresql://u:Pa55#w0rd/Zq@host:1/db", "Pa55#w0rd/Zq"),
        ("postgresql://u:a?b=c@host:1/db", "a?b=c"),
        ("postgresql+psycopg2://u:p@ss@host:1/db", "p@ss"),
        ("postgresql://u:with%40encoded@host:1/db", "with"),
    ]:
        masked = mask_url(url)
        assert secret not in masked, masked
        for part in secret.replace("@", "#").split("#"):
            if len(part) >= 3:
                assert part not in masked.split("://", 1)[1].split("@")[0], masked
        assert masked.endswith("host:1/db"), masked
    assert mask_url("not a url at all") == "<unparseable URL>"


def test_an_unparseable_database_url_is_never_quoted():
    with pytest.raises(SettingsError) as info:
        normalize_database_url("postgresql+psycopg2://u:s3cr3t@host:notaport/db")
    assert "s3cr3t" not in str(info.value)
