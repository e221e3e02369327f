"""Moderators' API: mutes, bans, locks, slow mode, purges, reports and the moderation log (API.md, "Moderation")."""
from datetime import timedelta

from flask import Blueprint, request

from . import actions
from .auth import current_session, login_required
from .errors import ApiError
from .models import bans_newest_first, find_report, moderation_log, mutes_in_force, reports_newest_first
from .schemas import BanSchema, MuteSchema, PurgeSchema, ReportSchema, ResolveReportSchema, SlowModeSchema
from .views import json_body, message_or_404, online_in, optional_reason, query_limit, room_or_404

bp = Blueprint("moderation", __name__, url_prefix="/api")


def _moderator():
    return current_session().user


@bp.post("/rooms/<slug>/mutes")
@login_required(moderator=True)
def mute(slug):
    room = room_or_404(slug)
    fields = json_body(MuteSchema())
    muted = actions.mute(_moderator(), room, fields["username"], timedelta(minutes=fields["minutes"]), fields["reason"])
    return muted, 201


@bp.get("/rooms/<slug>/mutes")
@login_required(moderator=True)
def list_mutes(slug):
    return {"mutes": [entry.to_api() for entry in mutes_in_force(room_or_404(slug))]}


@bp.delete("/rooms/<slug>/mutes/<username>")
@login_required(moderator=True)
def unmute(slug, username):
    actions.unmute(_moderator(), room_or_404(slug), username)
    return "", 204


@bp.post("/bans")
@login_required(moderator=True)
def ban():
    fields = json_body(BanSchema())
    return actions.ban(_moderator(), fields["username"], fields["reason"]).to_api(), 201


@bp.get("/bans")
@login_required(moderator=True)
def list_bans():
    return {"bans": [record.to_api() for record in bans_newest_first()]}


@bp.delete("/bans/<username>")
@login_required(moderator=True)
def unban(username):
    actions.unban(_moderator(), username)
    return "", 204


@bp.post("/rooms/<slug>/lock")
@login_required(moderator=True)
def lock(slug):
    room = room_or_404(slug)
    reason, online_count = optional_reason(), len(online_in([slug])[slug])
    return {"room": actions.set_locked(_moderator(), room, True, online_count, reason).to_api(online_count)}


@bp.post("/rooms/<slug>/unlock")
@login_required(moderator=True)
def unlock(slug):
    room = room_or_404(slug)
    reason, online_count = optional_reason(), len(online_in([slug])[slug])
    return {"room": actions.set_locked(_moderator(), room, False, online_count, reason).to_api(online_count)}


@bp.post("/rooms/<slug>/slow_mode")
@login_required(moderator=True)
def slow_mode(slug):
    room = room_or_404(slug)
    fields = json_body(SlowModeSchema())
    online_count = len(online_in([slug])[slug])
    return {"room": actions.set_slow_mode(_moderator(), room, fields["seconds"], online_count, fields["reason"])}


@bp.post("/moderation/purge")
@login_required(moderator=True)
def purge():
    fields = json_body(PurgeSchema())
    deleted = actions.purge(_moderator(), fields["username"], fields["minutes"], fields["room"], fields["reason"])
    return {"deleted": deleted}


@bp.get("/moderation/actions")
@login_required(moderator=True)
def list_actions():
    return {"actions": [entry.to_api() for entry in moderation_log(query_limit())]}


# Reports: any signed-in user reports a message; moderators list and resolve them.

@bp.post("/rooms/<slug>/messages/<message_id>/reports")
@login_required
def report_message(slug, message_id):
    message = message_or_404(room_or_404(slug), message_id)
    fields = json_body(ReportSchema())
    report, created = actions.report_message(current_session().user, message, fields["reason"])
    return report.to_api(), 201 if created else 200


@bp.get("/moderation/reports")
@login_required(moderator=True)
def list_reports():
    status = request.args.get("status") or None
    if status not in (None, "open", "resolved"):
        raise ApiError(422, "validation_error", "status must be open or resolved",
                       fields={"status": ["must be open or resolved"]})
    return {"reports": [report.to_api() for report in reports_newest_first(status)]}


@bp.post("/moderation/reports/<report_id>/resolve")
@login_required(moderator=True)
def resolve_report(report_id):
    report = find_report(report_id)
    if report is None:
        raise ApiError(404, "not_found", "no such report")
    fields = json_body(ResolveReportSchema())
    return actions.resolve_report(_moderator(), report, fields["action"]).to_api()
