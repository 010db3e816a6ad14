import pytest

from storage.settings import SettingsError, load_settings


def test_defaults_are_embedded(tmp_path):
    s = load_settings({"RESIMHUB_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{(tmp_path / 'resimhub.db').resolve()}"
    assert s.embedded_broker and s.redis_url is None
    assert s.analytics_memory_mb == 1024 and s.analytics_threads is None
    tuned = load_settings({"RESIMHUB_ANALYTICS_MEMORY_MB": "256", "RESIMHUB_ANALYTICS_THREADS": "2"})
    assert tuned.analytics_memory_mb == 256 and tuned.analytics_threads == 2
    with pytest.raises(SettingsError):
        load_settings({"RESIMHUB_ANALYTICS_MEMORY_MB": "8"})


def test_cluster_urls_are_taken_as_given():
    s = load_settings({"RESIMHUB_DATABASE_URL": "postgres://u@h/db", "RESIMHUB_BROKER_URL": "amqp://g:g@h:5672/%2F",
                       "RESIMHUB_REDIS_URL": "redis://h:6379/3"})
    assert s.database_url == "postgresql+psycopg2://u@h/db"
    assert not s.embedded_broker and s.redis_url == "redis://h:6379/3"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RESIMHUB_BROKER_URL", "http://rabbit"),
        ("RESIMHUB_REDIS_URL", "localhost:6379"),
        ("RESIMHUB_DATABASE_URL", "mysql://x"),
        ("RESIMHUB_RESULT_TTL", "soon"),
        ("RESIMHUB_RESULT_TTL", "0"),
        ("RESIMHUB_RELAY_POLL_INTERVAL", "fast"),
        ("RESIMHUB_LOG_LEVEL", "LOUD"),
        ("RESIMHUB_QUEUE_PREFIX", "a b"),
        ("RESIMHUB_ANALYTICS_MEMORY_MB", "lots"),
        ("RESIMHUB_ANALYTICS_MEMORY_MB", "-1"),
        ("RESIMHUB_ANALYTICS_THREADS", "0"),
        ("RESIMHUB_ANALYTICS_THREADS", "many"),
        ("RESIMHUB_WRITE_RATE", "inf"),
    ],
)
def test_malformed_values_name_the_variable(name, value):
    with pytest.raises(SettingsError) as err:
        load_settings({name: value})
    assert name in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_to_start_with_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "api.cli", "db", "upgrade"], capture_output=True, text=True,
                          env={"RESIMHUB_DATA_DIR": str(tmp_path), "RESIMHUB_RESULT_TTL": "x", "PATH": "/usr/bin"},
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "RESIMHUB_RESULT_TTL" in proc.stderr


def test_training_time_limit_defaults_to_six_hours_and_is_bounded():
    from storage.settings import MAX_TRAINING_TIME_LIMIT_S

    assert load_settings({}).training_time_limit == 6 * 3600
    assert load_settings({"RESIMHUB_TRAINING_TIME_LIMIT": "90.5"}).training_time_limit == 90.5
    for value in ("0", "soon", "nan", str(MAX_TRAINING_TIME_LIMIT_S + 1)):
        with pytest.raises(SettingsError, match="RESIMHUB_TRAINING_TIME_LIMIT"):
            load_settings({"RESIMHUB_TRAINING_TIME_LIMIT": value})
    # The train actor's Dramatiq limit is a backstop above the longest allowed run.
    from actors.consumers import SPECS

    [train] = [spec for spec in SPECS if spec.name == "train"]
    assert train.time_limit_ms > MAX_TRAINING_TIME_LIMIT_S * 1000
