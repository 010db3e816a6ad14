"""``GET /``: where to go from here, instead of a 404 for the first URL everyone tries.

JSON for API clients (the default); a page of the same links for a browser, which asks for HTML.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

router = APIRouter(tags=["index"])

#: What a client can GET or POST to first; the full list is the OpenAPI document at /docs.
RESOURCES: dict[str, str] = {
    "environments": "/api/environments",
    "experiments": "/api/experiments",
    "tasks": "/api/tasks/{task_id}",
    "events": "/api/events",
    "webhooks": "/api/webhooks",
    "analytics": "/api/analytics/recent",
    "benchmark_upload": "/benchmark/upload_model",
    "benchmark_run": "/benchmark/run",
    "benchmark_recent": "/benchmark/recent",
    "benchmark_compare": "/benchmark/compare?model_ids={model_id},{model_id}&env={env_name}",
}
LINKS: dict[str, str] = {"docs": "/docs", "openapi": "/openapi.json", "health": "/health", "ready": "/ready",
                         "metrics": "/metrics"}
API_ROOTS: dict[str, str] = {"api": "/api", "benchmark": "/benchmark", "legacy": "/api/v1"}


class Index(BaseModel):
    name: str
    version: str
    description: str
    links: dict[str, str] = Field(description="documentation, liveness, readiness and metrics")
    api_roots: dict[str, str] = Field(description="the prefixes of the API: FastAPI routes and the Flask "
                                      "legacy routes (/api/v1)")
    resources: dict[str, str] = Field(description="where each kind of resource lives")


@router.get("/", responses={200: {"content": {"text/html": {}}, "description": "links, as JSON or as a page"}})
def index(request: Request) -> Index:
    """Links to the documentation, the health checks and the API roots."""
    app = request.app
    body = Index(name=app.title, version=app.version, description=app.description, links=LINKS,
                 api_roots=API_ROOTS, resources=RESOURCES)
    if _wants_html(request.headers.get("accept", "")):
        return HTMLResponse(_page(body))
    return JSONResponse(body.model_dump())


def _wants_html(accept: str) -> bool:
    """A browser lists text/html first; curl (``*/*``), httpx and API clients get JSON."""
    first = accept.split(",", 1)[0].split(";", 1)[0].strip().lower()
    return first in ("text/html", "application/xhtml+xml")


def _page(body: Index) -> str:
    items = "".join(f'<li><a href="{escape(url)}">{escape(name)}</a> <code>{escape(url)}</code></li>'
                    for name, url in {**body.links, **body.resources}.items() if "{" not in url)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(body.name)}</title></head><body>"
            f"<h1>{escape(body.name)} {escape(body.version)}</h1><p>{escape(body.description)}</p>"
            f"<ul>{items}</ul></body></html>")
