"""Creating and reading experiments."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from api.errors import Conflict, Invalid, NotFound
from api.schemas import ExperimentCreate, ExperimentPublic
from api.services import environments
from api.services.catalog import agent_env_mismatch, check_hyperparams, preset_for, require_known_agent
from storage import outbox
from storage.events import ExperimentCreated
from storage.experiments import ExperimentStatus
from storage.models import Experiment, utcnow


def create(session: Session, body: ExperimentCreate) -> ExperimentPublic:
    """Validate and insert an experiment with its ``ExperimentCreated`` event; its public form."""
    agent = require_known_agent(body.agent)
    env_name = body.env_name or _env_named_like(session, body.name)
    environment = environments.by_name(session, env_name)
    if environment is None or environment.status == "rejected":
        state = "was rejected" if environment else "is not registered"
        raise Invalid(f"environment {env_name!r} {state}; register it with POST /api/environments first",
                      code="environment_not_registered", details={"env_name": env_name})
    hyperparams, total_timesteps, preset = _with_preset(body, agent, environment.env_name)
    check_hyperparams(agent, hyperparams)
    if environment.spec is not None:
        _check_agent_fits_env(agent, environment.spec)
    now = utcnow()
    values = {"name": body.name, "environment_id": environment.id, "env_name": environment.env_name,
              "agent": agent, "total_timesteps": total_timesteps, "episodes": body.episodes,
              "seeds": body.seed_list(), "hyperparams": hyperparams, "preset": preset,
              "eval_episodes": body.eval_episodes, "eval_seed": body.eval_seed, "status": ExperimentStatus.CREATED,
              "results": None, "created_at": now, "updated_at": now}
    # A Core INSERT, not an ORM object: the unit of work's flush was the largest single cost of a
    # submission, and the new row is only ever returned, never changed, in this transaction.
    values["id"] = session.execute(_INSERT, values).scalar_one()
    outbox.record(session, ExperimentCreated(
        experiment_id=values["id"], name=body.name, env_name=environment.env_name, agent=agent,
        seeds=list(values["seeds"]), total_timesteps=total_timesteps, episodes=body.episodes,
        hyperparams=dict(hyperparams),
    ))
    session.commit()
    return ExperimentPublic.model_validate(values)


_INSERT = insert(Experiment.__table__).returning(Experiment.__table__.c.id)


def _with_preset(body: ExperimentCreate, agent: str, env_name: str) -> tuple[dict, int | None, dict | None]:
    """(hyperparams, total_timesteps, preset record): the request's own, or, with ``preset: true``,
    the tuned preset's overridden by whatever the request gives. Never chosen silently: without
    ``preset`` the engine's defaults apply, as they always have (docs/agents.md says why)."""
    if not body.preset:
        return dict(body.hyperparams), body.total_timesteps, None
    preset = preset_for(agent, env_name)
    if preset is None:
        raise Invalid(f"there is no tuned preset for {agent} on {env_name}; GET /api/agents/{agent} lists the "
                      "presets (and the pairs left without one, with why)", code="no_preset",
                      details={"agent": agent, "env_name": env_name})
    budget = body.total_timesteps
    if budget is None and body.episodes is None:
        budget = preset.total_timesteps
    record = {**preset.describe(), "overridden": sorted(body.hyperparams)}
    return {**preset.hyperparams, **body.hyperparams}, budget, record


def _env_named_like(session: Session, name: str) -> str:
    """The environment of an experiment created without ``env_name``: the original ReSimHub API named
    experiments after their environment (``{"name": "CartPole-v1", ...}``), so a name that is a
    registered environment id stands for it. Any other name leaves ``env_name`` simply missing."""
    environment = environments.by_name(session, name)
    if environment is None or environment.status == "rejected":
        raise Invalid("the request is not valid", details=[
            {"field": "env_name", "message": "Field required (the name is not a registered environment id)",
             "type": "missing"}])
    return environment.env_name


def check_restated(experiment: Experiment, **stated: str | None) -> None:
    """Refuse a request that restates a field of ``experiment`` (``env_name``; ``agent`` or ``algo``,
    as the original API's ``start_training`` called it) with another value: training the experiment
    anyway would run something other than what the client asked for. Agreeing fields are accepted,
    agent names case-insensitively as everywhere else."""
    for field, value in stated.items():
        if value is None:
            continue
        if field == "env_name":
            actual, same = experiment.env_name, value.strip() == experiment.env_name
        else:
            actual, same = experiment.agent, value.strip().upper().replace("-", "") == experiment.agent
        if not same:
            raise Conflict(f"{field} {value!r} conflicts with experiment {experiment.id}, whose "
                           f"{'env_name' if field == 'env_name' else 'agent'} is {actual!r}",
                           code="experiment_mismatch",
                           details={"field": field, "requested": value, "experiment": actual,
                                    "experiment_id": experiment.id})


def _check_agent_fits_env(agent: str, spec: dict) -> None:
    reason = agent_env_mismatch(agent, spec)
    if reason is not None:
        raise Invalid(f"{agent} cannot train on {spec.get('env_id')}: {reason}", code="agent_env_mismatch")


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
