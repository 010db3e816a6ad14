import dataclasses

import pytest

from storage.events import CATALOGUE, Envelope, EnvironmentRegistered, ExperimentCreated, SnapshotWritten, type_name

REQUIRED = ["EnvironmentRegistered", "EnvironmentVerified", "ExperimentCreated", "TrainingRequested",
            "TrainingStarted", "TrainingProgressed", "TrainingCompleted", "TrainingFailed", "ModelUploaded",
            "ModelValidated", "ModelRejected", "EvaluationRequested", "EvaluationCompleted", "EvaluationFailed",
            "SnapshotWritten", "ExperimentCompleted", "ExperimentFailed"]


def test_type_names_follow_the_brief():
    assert type_name("ExperimentCreated") == "resimhub.experiment.created"
    assert type_name("SnapshotWritten") == "resimhub.snapshot.written"
    for name in REQUIRED:
        assert type_name(name) in CATALOGUE


def test_events_are_frozen():
    event = EnvironmentRegistered(1, "CartPole-v1", "t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.env_name = "x"  # type: ignore[misc]


def test_cloudevents_round_trip():
    event = ExperimentCreated(experiment_id=12, name="n", env_name="CartPole-v1", agent="PPO", seeds=[0, 1])
    doc = Envelope.wrap(event).to_cloudevent()
    assert doc["specversion"] == "1.0" and doc["source"] == "resimhub"
    assert doc["type"] == "resimhub.experiment.created" and doc["subject"] == "experiments/12"
    assert doc["time"].endswith("Z") and doc["datacontenttype"] == "application/json"
    back = Envelope.from_cloudevent(doc)
    assert back.event() == event and back.id == doc["id"]


def test_unknown_fields_from_newer_producers_are_ignored():
    doc = Envelope.wrap(SnapshotWritten(experiment_id=1, datasets=["episodes"], rows=3)).to_cloudevent()
    doc["data"]["added_later"] = True
    assert Envelope.from_cloudevent(doc).event() == SnapshotWritten(1, ["episodes"], 3)
