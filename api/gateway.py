"""An app factory for uvicorn (``--factory``), so ``resimhub api --workers N`` can fork processes."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from storage.context import open_storage
from storage.settings import load_settings


def create_from_env() -> FastAPI:
    return create_app(open_storage(load_settings()))
