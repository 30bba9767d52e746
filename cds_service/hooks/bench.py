"""``POST /bench/json-only``: the baseline of the benchmarks in ``bench/``, served only when
``TRIALSCREEN_BENCH_ENDPOINTS`` is true (never in production).

It does what every hook call must do at the least: read the request body, parse it as JSON (with the same
parser as the patient-view endpoint) and answer an empty card list, through the same app, request hooks and
server. A hook call's cost is reported as a ratio to this one.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Flask, Response, request

from cds_service.errors import InputError
from cds_service.hooks.app import json_response

__all__ = ["register_bench_endpoints", "BENCH_JSON_ONLY"]

BENCH_JSON_ONLY = "/bench/json-only"


def register_bench_endpoints(app: Flask) -> None:
    """Add the baseline endpoint to ``app`` (called by ``create_app`` only when ``bench_endpoints`` is set)."""
    bp = Blueprint("bench", __name__)

    @bp.post(BENCH_JSON_ONLY)
    def json_only() -> Response:
        raw = request.get_data(cache=False)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InputError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InputError("the request body is not a JSON object")
        return json_response({"cards": []})

    app.register_blueprint(bp)
