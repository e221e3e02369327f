"""Operations endpoints: liveness, readiness, metrics and the API's OpenAPI document."""
import hmac

from flask import Blueprint, current_app, request
from sqlalchemy import text

from . import hub, metrics, openapi, streams
from .errors import ApiError
from .extensions import db

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


READER_LAG_LIMIT = 5  # seconds this process's hub may be behind the firehose and still be ready


@bp.get("/readyz")
def readyz():
    status = {}
    try:
        policy = streams.current().eviction_policy()
        # Eviction would silently drop streams (DESIGN.md, "Limits").
        status["redis"] = "ok" if policy == "noeviction" else f"failed: maxmemory-policy {policy} evicts keys"
    except Exception as error:  # noqa: BLE001 - any failure means not ready; say which
        status["redis"] = f"failed: {type(error).__name__}"
    if status["redis"] == "ok":  # and this process reads it: its hub runs and keeps up
        try:
            lag = hub.current().reader_lag()
            if lag is None or lag > READER_LAG_LIMIT:
                status["redis"] = "failed: this process's reader is " + \
                    ("not running" if lag is None else f"{lag:.1f} s behind")
        except Exception as error:  # noqa: BLE001
            status["redis"] = f"failed: {type(error).__name__}"
    try:
        db.session.execute(text("SELECT 1"))
        db.session.commit()
        status["database"] = "ok"
    except Exception as error:  # noqa: BLE001
        db.session.rollback()
        status["database"] = f"failed: {type(error).__name__}"
    ready = all(value == "ok" for value in status.values())
    return status, 200 if ready else 503


@bp.get("/metrics")
def metrics_endpoint():
    token = current_app.config["CHAT_METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "not_authenticated", "send Authorization: Bearer <CHAT_METRICS_TOKEN>")
    return metrics.render()


@bp.get("/api/openapi.json")
def openapi_document():
    """No sign-in: it describes the API, nothing about anyone. Caches may keep it a while, then ask
    again with its ETag (a deployment may change it)."""
    body, etag = openapi.document(current_app)
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    response.set_etag(etag)
    return response.make_conditional(request)
