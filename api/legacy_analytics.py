"""``/api/v1/analytics/*``: the analytics answers existing Flask clients read, from the same service."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.services import analytics
from storage.context import Storage


def analytics_blueprint(storage: Storage) -> Blueprint:
    bp = Blueprint("analytics", __name__, url_prefix="/analytics")

    @bp.get("/recent")
    def recent():
        return jsonify(analytics.recent(storage, env=request.args.get("env") or None,
                                        agent=request.args.get("agent") or None,
                                        since=analytics.parse_since(request.args.get("since")),
                                        limit=analytics.parse_limit(request.args.get("limit"))))

    @bp.get("/experiment/<int:experiment_id>")
    def experiment(experiment_id: int):
        return jsonify(analytics.experiment(storage, experiment_id))

    return bp
