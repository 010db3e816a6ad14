from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import StorageDep
from api.schemas import TaskPublic
from api.services import tasks

router = APIRouter(prefix="/api/tasks", tags=["tasks"])


@router.get("/{task_id}")
async def get_task(task_id: str, storage: StorageDep,
             wait: float = Query(0, ge=0, le=tasks.MAX_WAIT_S, description="block up to this many seconds")
             ) -> TaskPublic:
    """Poll a task; with ``wait`` the answer comes as soon as the task finishes or the time passes."""
    return await tasks.wait_for_async(storage.db.reads, task_id, wait)
