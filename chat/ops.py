"""Operations endpoints: liveness, readiness and metrics."""
from flask import Blueprint
from sqlalchemy import text

from . import metrics, streams
from .extensions import db

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    status = {}
    try:
        streams.current().ping()
        status["redis"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready; say which
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
    return metrics.render()
