"""Creating and reading experiments."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Invalid, NotFound
from api.schemas import ExperimentCreate
from api.services import environments
from api.services.catalog import check_hyperparams, require_known_agent
from storage import outbox
from storage.events import ExperimentCreated, rfc3339
from storage.models import Experiment


def to_public(exp: Experiment) -> dict:
    return {
        "id": exp.id,
        "name": exp.name,
        "env_name": exp.env_name,
        "environment_id": exp.environment_id,
        "agent": exp.agent,
        "total_timesteps": exp.total_timesteps,
        "episodes": exp.episodes,
        "seeds": list(exp.seeds or []),
        "hyperparams": dict(exp.hyperparams or {}),
        "eval_episodes": exp.eval_episodes,
        "eval_seed": exp.eval_seed,
        "status": exp.status,
        "results": exp.results,
        "created_at": rfc3339(exp.created_at),
        "updated_at": rfc3339(exp.updated_at),
    }


def create(session: Session, body: ExperimentCreate) -> Experiment:
    agent = require_known_agent(body.agent)
    environment = environments.by_name(session, body.env_name)
    if environment is None or environment.status == "rejected":
        state = "was rejected" if environment else "is not registered"
        raise Invalid(f"environment {body.env_name!r} {state}; register it with POST /api/environments first",
                      code="environment_not_registered", details={"env_name": body.env_name})
    check_hyperparams(agent, body.hyperparams)
    if environment.spec is not None:
        _check_agent_fits_env(agent, environment.spec)
    experiment = Experiment(
        name=body.name,
        environment_id=environment.id,
        env_name=environment.env_name,
        agent=agent,
        total_timesteps=body.total_timesteps,
        episodes=body.episodes,
        seeds=body.seed_list(),
        hyperparams=body.hyperparams,
        eval_episodes=body.eval_episodes,
        eval_seed=body.eval_seed,
        status="created",
    )
    session.add(experiment)
    session.flush()
    outbox.record(session, ExperimentCreated(
        experiment_id=experiment.id, name=experiment.name, env_name=experiment.env_name, agent=agent,
        seeds=list(experiment.seeds), total_timesteps=experiment.total_timesteps, episodes=experiment.episodes,
        hyperparams=dict(experiment.hyperparams),
    ))
    session.commit()
    return experiment


def _check_agent_fits_env(agent: str, spec: dict) -> None:
    obs, act = spec.get("observation_space", {}), spec.get("action_space", {})
    if agent == "QLEARNING" and obs.get("type") != "Discrete":
        raise Invalid("QLEARNING needs a Discrete observation space; "
                      f"{spec.get('env_id')} observations are {obs.get('type')}", code="agent_env_mismatch")
    if agent in ("DQN", "A2C", "QLEARNING") and act.get("type") != "Discrete":
        raise Invalid(f"{agent} needs a Discrete action space; {spec.get('env_id')} actions are {act.get('type')}",
                      code="agent_env_mismatch")


def get(session: Session, experiment_id: int) -> Experiment:
    exp = session.get(Experiment, experiment_id)
    if exp is None:
        raise NotFound(f"experiment {experiment_id} does not exist", details={"experiment_id": experiment_id})
    return exp


def list_all(session: Session, *, limit: int = 100, offset: int = 0, status: str | None = None) -> list[Experiment]:
    query = select(Experiment).order_by(Experiment.id.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(Experiment.status == status)
    return list(session.scalars(query))
