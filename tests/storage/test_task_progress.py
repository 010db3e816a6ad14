"""A task's progress fraction only moves forward, and reads 1.0 only once the task succeeded."""

import pytest

from storage import tasks
from storage.context import open_storage
from storage.migrate import upgrade
from tests.support.hubs import settings_for


@pytest.fixture
def storage(tmp_path):
    settings = settings_for(tmp_path)
    upgrade(settings)
    s = open_storage(settings)
    yield s
    s.close()


def test_the_fraction_never_goes_back_nor_reaches_one_before_success(storage):
    with storage.db.session() as session:
        task = tasks.create(session, "train")
        session.commit()
        seen = []
        # What was seen on a DQN run (0.6474 -> 0.8843 -> 0.7647 -> 1.0), then a reporter's 1.0.
        for fraction in (0.6474, 0.8843, 0.7647, 1.0, 0.5):
            tasks.set_progress(session, task, {"fraction": fraction, "timesteps": 1})
            session.commit()
            seen.append(tasks.get(session, task.id).progress["fraction"])
        assert seen == [0.6474, 0.8843, 0.8843, tasks.RUNNING_CEILING, tasks.RUNNING_CEILING]
        assert task.status == "running" and task.progress["timesteps"] == 1
        tasks.succeed(session, task, {})
        session.commit()
        assert task.progress["fraction"] == 1.0
        tasks.set_progress(session, task, {"fraction": 0.1})  # too late: a finished task keeps its progress
        assert task.progress["fraction"] == 1.0


def test_progress_without_a_fraction_is_kept_as_given(storage):
    with storage.db.session() as session:
        task = tasks.create(session, "evaluate")
        tasks.set_progress(session, task, {"episodes": 3})
        assert task.progress == {"episodes": 3}
