from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StorageDep
from api.services.health import readiness

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
def ready(storage: StorageDep) -> JSONResponse:
    """Readiness: database, broker and Redis each checked and reported."""
    report = readiness(storage)
    return JSONResponse(report, status_code=200 if report["ready"] else 503)
