import pytest

from tests.support.hubs import running_hub, settings_for


@pytest.fixture
def hub(tmp_path):
    """An embedded hub (SQLite, in-process broker, worker and relay)."""
    with running_hub(settings_for(tmp_path)) as h:
        yield h
