"""``POST /bench/json-only``: the baseline of the benchmarks in ``bench/``, served only when
``TRIALSCREEN_BENCH_ENDPOINTS`` is true (never in production).

It does what every hook call must do at the least: read the request body, parse it as JSON (with the same
parser as the patient-view endpoint: ``parse_json_body``, so orjson or json.loads by the same size threshold) and
answer an empty card list, through the same app, request hooks and server. A hook call's cost is reported as a
ratio to this one.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, request

from cds_service.errors import InputError
from cds_service.hooks.app import json_response
from cds_service.hooks.json_body import parse_json_body

__all__ = ["register_bench_endpoints", "BENCH_JSON_ONLY"]

BENCH_JSON_ONLY = "/bench/json-only"


def register_bench_endpoints(app: Flask) -> None:
    """Add the baseline endpoint to ``app`` (called by ``create_app`` only when ``bench_endpoints`` is set)."""
    bp = Blueprint("bench", __name__)

    @bp.post(BENCH_JSON_ONLY)
    def json_only() -> Response:
        body = parse_json_body(request.get_data(cache=False))
        if not isinstance(body, dict):
            raise InputError("the request body is not a JSON object")
        return json_response({"cards": []})

    app.register_blueprint(bp)
