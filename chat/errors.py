"""The one error shape: JSON for the API (API.md, "Conventions"), a page for everything else."""
import logging

from flask import jsonify, render_template, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from . import metrics
from .extensions import REDIS_ERRORS

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               429: "rate_limited", 500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """An answer other than success, with API.md's stable code."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields, self.retry_after = fields, retry_after


class Unavailable(ApiError):
    """Redis or the database cannot take the request right now: nothing was acknowledged."""

    def __init__(self, message="the service cannot take this right now; try again", retry_after=2):
        super().__init__(503, "unavailable", message, retry_after=retry_after)


def error_response(error: ApiError):
    """Render an ApiError as the contract's JSON (and count the rejection)."""
    body = {"code": error.code, "message": error.message}
    if error.fields is not None:
        body["fields"] = error.fields
    response = jsonify({"error": body})
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    metrics.REJECTIONS.labels(code=error.code).inc()
    return response


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/readyz", "/metrics")


def _http_error(error: HTTPException):
    if _wants_json():
        code = _HTTP_CODES.get(error.code, "http_error")
        return error_response(ApiError(error.code, code, error.description or code))
    template = f"errors/{error.code}.html" if error.code in (403, 404, 500) else "errors/error.html"
    return render_template(template, error=error), error.code


def _unexpected(error: Exception):
    log.exception("unhandled error on %s %r", request.method, request.path)  # %r: a path cannot forge log lines
    if _wants_json():
        return error_response(ApiError(500, "internal_error", "something went wrong on our side"))
    return render_template("errors/500.html", error=error), 500


def _dependency_down(error: Exception):
    # Redis or the database failed mid-request: 503 tells the client nothing was acknowledged.
    log.warning("dependency failure on %s %r: %s", request.method, request.path, error)
    metrics.DEPENDENCY_ERRORS.labels(dependency="redis" if isinstance(error, REDIS_ERRORS) else "database").inc()
    return error_response(Unavailable())


def init_app(app):
    app.register_error_handler(ApiError, error_response)
    for redis_error in REDIS_ERRORS:
        app.register_error_handler(redis_error, _dependency_down)
    app.register_error_handler(DBAPIError, _dependency_down)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
