"""``/api/agents``: what each agent is, which spaces it trains on, and every hyperparameter a
request may set, with its type, default, bounds and documentation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from api.services import catalog

router = APIRouter(prefix="/api/agents", tags=["agents"])


class Hyperparameter(BaseModel):
    name: str
    type: str
    default: Any
    doc: str | None
    minimum: int | None = None
    maximum: int | None = None
    max_items: int | None = None


class Spaces(BaseModel):
    observation: str
    action: str


class Preset(BaseModel):
    agent: str
    env_name: str
    hyperparams: dict[str, Any]
    total_timesteps: int
    source: str
    differences: list[str]


class NoPreset(BaseModel):
    env_name: str
    reason: str


class Agent(BaseModel):
    name: str
    description: str
    spaces: list[Spaces]
    default_timesteps: int
    max_total_timesteps: int
    hyperparameters: list[Hyperparameter]
    presets: list[Preset]
    without_preset: list[NoPreset]


@router.get("")
def list_agents() -> list[Agent]:
    """Every agent, with its hyperparameters (what ``hyperparams`` on an experiment may set)."""
    return catalog.describe_agents()


@router.get("/{name}")
def get_agent(name: str = Path(max_length=40)) -> Agent:
    """One agent (case-insensitive name); an unknown name is a 422 listing the known ones."""
    return catalog.describe_agent(name)
