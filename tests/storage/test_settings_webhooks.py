import pytest

from storage.settings import DEFAULT_WEBHOOK_RETRY_SCHEDULE, SettingsError, load_settings


def test_defaults_span_about_a_day_and_refuse_private_addresses():
    s = load_settings({})
    assert s.webhook_retry_schedule == DEFAULT_WEBHOOK_RETRY_SCHEDULE
    assert 20 * 3600 < sum(s.webhook_retry_schedule) < 30 * 3600
    assert list(s.webhook_retry_schedule) == sorted(s.webhook_retry_schedule)
    assert s.webhook_allow_private is False


def test_values_are_parsed():
    s = load_settings({"RESIMHUB_WEBHOOK_RETRY_SCHEDULE": "0.2, 0.4,0.8", "RESIMHUB_WEBHOOK_ALLOW_PRIVATE": "1"})
    assert s.webhook_retry_schedule == (0.2, 0.4, 0.8) and s.webhook_allow_private is True
    for text, value in (("true", True), ("YES", True), ("on", True), ("0", False), ("false", False), ("", False)):
        assert load_settings({"RESIMHUB_WEBHOOK_ALLOW_PRIVATE": text}).webhook_allow_private is value
    assert load_settings({"RESIMHUB_WEBHOOK_RETRY_SCHEDULE": ""}).webhook_retry_schedule == \
        DEFAULT_WEBHOOK_RETRY_SCHEDULE


@pytest.mark.parametrize(("name", "value"), [
    ("RESIMHUB_WEBHOOK_RETRY_SCHEDULE", "5,soon"),
    ("RESIMHUB_WEBHOOK_RETRY_SCHEDULE", "5,,10"),
    ("RESIMHUB_WEBHOOK_RETRY_SCHEDULE", "-1"),
    ("RESIMHUB_WEBHOOK_RETRY_SCHEDULE", "nan"),
    ("RESIMHUB_WEBHOOK_RETRY_SCHEDULE", "inf"),
    ("RESIMHUB_WEBHOOK_RETRY_SCHEDULE", "9999999"),
    ("RESIMHUB_WEBHOOK_RETRY_SCHEDULE", ",".join(["1"] * 51)),
    ("RESIMHUB_WEBHOOK_ALLOW_PRIVATE", "maybe"),
])
def test_malformed_values_name_the_variable_in_one_line(name, value):
    with pytest.raises(SettingsError) as err:
        load_settings({name: value})
    assert name in str(err.value) and "\n" not in str(err.value)
