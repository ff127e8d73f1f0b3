"""Time rules for scheduledFor: offset required unless a timezone is named, no DST gaps, no past."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from postwright.errors import ValidationFailed
from postwright.kit.clock import utcnow

PAST_TOLERANCE = timedelta(seconds=60)


def parse_timezone(name: str | None, field: str = "timezone") -> ZoneInfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(
            f"{field} must be an IANA timezone such as Europe/Stockholm.",
            details=[{"field": field, "message": f"unknown timezone {name!r}"}],
        ) from exc


def parse_instant(value: str, *, timezone: str | None, field: str) -> datetime:
    """Read an ISO-8601 time; a naive one is read in `timezone` (DST gaps refused)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValidationFailed(
            f"{field} must be an ISO-8601 date-time such as 2026-06-15T09:00:00Z.",
            details=[{"field": field, "message": "not an ISO-8601 date-time"}],
        ) from exc
    if parsed.tzinfo is None:
        zone = parse_timezone(timezone)
        if zone is None:
            raise ValidationFailed(
                f"{field} has no UTC offset: add Z or +hh:mm, or name the timezone it is in.",
                details=[{"field": field, "message": "naive time without timezone"}],
            )
        local = parsed.replace(tzinfo=zone)
        round_trip = local.astimezone(UTC).astimezone(zone)
        if round_trip.replace(tzinfo=None) != parsed:
            raise ValidationFailed(
                f"{field} {value} does not exist in {timezone} (the clocks skip it for daylight saving).",
                details=[{"field": field, "message": "falls in a DST gap"}],
            )
        parsed = local
    return parsed.astimezone(UTC)


def due_time(value: str, *, timezone: str | None, field: str = "scheduledFor") -> datetime:
    """The moment a target becomes due: more than 60 s in the past is refused, within 60 s is now."""
    instant = parse_instant(value, timezone=timezone, field=field)
    now = utcnow()
    if instant < now - PAST_TOLERANCE:
        raise ValidationFailed(
            f"{field} is in the past; use a future time or POST /posts/{{id}}/publish to publish now.",
            details=[{"field": field, "message": "more than 60 seconds in the past"}],
        )
    return max(instant, now)
