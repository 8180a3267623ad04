"""EventBridge Scheduler cron expressions: validated as AWS validates them, and evaluated.

Six fields: minutes hours day-of-month month day-of-week year (docs: "Cron expressions reference").
Wildcards by field: minutes and hours `, - * /`; day-of-month `, - * ? / L W`; month `, - * /` and JAN-DEC;
day-of-week `, - * ? L #` and SUN-SAT (1 = Sunday); year 1970-2199 `, - * /`. Exactly one of day-of-month and
day-of-week is `?`; `#` allows a single expression in its field.

The config refuses at synth time what AWS would refuse at deploy (`Cron` in config_base.py); the scaler's
evaluator uses `latest_start` to find the pre-warm window in force now, whether or not its scheduled run
reached Reflex (a run lost to a held lock, an open breaker or a dropped delivery is applied late, not never).
"""

from __future__ import annotations

import calendar
import difflib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo
from zoneinfo import available_timezones as _available_timezones

_MONTHS = {name: i + 1 for i, name in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP",
                                                  "OCT", "NOV", "DEC"))}
_DAYS = {name: i + 1 for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_FIELDS = ("minutes", "hours", "day-of-month", "month", "day-of-week", "year")


class CronError(ValueError):
    pass


def _number(token: str, field: str, lo: int, hi: int, names: dict[str, int] | None = None) -> int:
    if names and token.upper() in names:
        return names[token.upper()]
    if not token.isdigit():
        raise CronError(f"{field}: {token!r} is not a number{' or a name' if names else ''} in {lo}-{hi}")
    value = int(token)
    if not lo <= value <= hi:
        raise CronError(f"{field}: {value} is outside {lo}-{hi}")
    return value


def _values(expr: str, field: str, lo: int, hi: int, names: dict[str, int] | None = None) -> frozenset[int]:
    """A field made of `*`, numbers, ranges `a-b` and increments `a/n`, `*/n`, `a-b/n`, joined by commas."""
    out: set[int] = set()
    for part in expr.split(","):
        if not part:
            raise CronError(f"{field}: empty item in {expr!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if _:
            step = _number(step_text, field, 1, hi - lo + 1 if hi > lo else 1)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = _number(a, field, lo, hi, names), _number(b, field, lo, hi, names)
            if start > end:
                raise CronError(f"{field}: range {base!r} runs backwards")
        else:
            start = _number(base, field, lo, hi, names)
            end = hi if _ else start
        out.update(range(start, end + 1, step))
    return frozenset(out)


@dataclass(frozen=True)
class _DayOfMonth:
    values: frozenset[int] = frozenset()
    last: bool = False           # L
    nearest_weekday: int = 0     # nW

    def matches(self, d: date) -> bool:
        days_in_month = calendar.monthrange(d.year, d.month)[1]
        if self.last:
            return d.day == days_in_month
        if self.nearest_weekday:
            return d.day == _nearest_weekday(d.year, d.month, self.nearest_weekday)
        return d.day in self.values


@dataclass(frozen=True)
class _DayOfWeek:
    values: frozenset[int] = frozenset()  # 1 = Sunday ... 7 = Saturday
    last_of_month: int = 0                # nL: the last such weekday of the month
    nth: tuple[int, int] = (0, 0)         # d#n: the n-th such weekday of the month

    def matches(self, d: date) -> bool:
        weekday = (d.isoweekday() % 7) + 1  # Monday=1 (ISO) -> 2; Sunday=7 (ISO) -> 1
        if self.last_of_month:
            return weekday == self.last_of_month and d.day + 7 > calendar.monthrange(d.year, d.month)[1]
        if self.nth[0]:
            return weekday == self.nth[0] and (d.day - 1) // 7 + 1 == self.nth[1]
        return weekday in self.values


def _nearest_weekday(year: int, month: int, day: int) -> int:
    """The weekday (Monday-Friday) nearest to `day` within the same month (Quartz's W)."""
    days_in_month = calendar.monthrange(year, month)[1]
    day = min(day, days_in_month)
    wd = date(year, month, day).weekday()  # Monday=0
    if wd == 5:  # Saturday -> Friday, or Monday when the 1st
        return day - 1 if day > 1 else day + 2
    if wd == 6:  # Sunday -> Monday, or Friday when the last day
        return day + 1 if day < days_in_month else day - 2
    return day


@dataclass(frozen=True)
class CronExpression:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    day_of_month: _DayOfMonth | None  # None: '?'
    months: frozenset[int]
    day_of_week: _DayOfWeek | None    # None: '?'
    years: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        return _parse(text)

    @classmethod
    def _build(cls, text: str) -> CronExpression:
        fields = text.split()
        if len(fields) != 6:
            raise CronError("cron needs 6 fields: minutes hours day-of-month month day-of-week year "
                            f"(got {len(fields)})")
        minute, hour, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise CronError("day-of-month/day-of-week: exactly one of them must be '?' (EventBridge cannot take "
                            f"both; got {dom!r} and {dow!r})")
        for name, value in zip(_FIELDS, fields, strict=True):
            if "?" in value and (name not in ("day-of-month", "day-of-week") or value != "?"):
                raise CronError(f"{name}: '?' is only allowed alone, in day-of-month or day-of-week")
        return cls(text=text, minutes=_values(minute, "minutes", 0, 59), hours=_values(hour, "hours", 0, 23),
                   day_of_month=None if dom == "?" else _parse_dom(dom),
                   months=_values(month, "month", 1, 12, _MONTHS),
                   day_of_week=None if dow == "?" else _parse_dow(dow),
                   years=_values(year, "year", 1970, 2199))

    def matches(self, local: datetime) -> bool:
        """Whether the wall-clock minute `local` (in the schedule's zone) is an occurrence."""
        d = local.date()
        if local.minute not in self.minutes or local.hour not in self.hours or local.month not in self.months:
            return False
        if local.year not in self.years:
            return False
        if self.day_of_month is not None and not self.day_of_month.matches(d):
            return False
        return self.day_of_week is None or self.day_of_week.matches(d)

    def latest_start(self, now: datetime, within_minutes: int, timezone: str) -> datetime | None:
        """The latest occurrence in (now - within_minutes, now], as an aware UTC datetime, or None.

        Walks back minute by minute in UTC and reads each minute on the zone's wall clock, so a daylight-saving
        night is handled as the zone has it: a skipped wall-clock hour has no occurrence, a repeated one only
        its first."""
        zone = ZoneInfo(timezone)
        minute = now.astimezone(UTC).replace(second=0, microsecond=0)
        for _ in range(within_minutes):
            local = minute.astimezone(zone)
            # The repeated hour of a fall-back night (fold 1) is not a second occurrence: EventBridge Scheduler
            # runs a schedule once there.
            if local.fold == 0 and self.matches(local):
                return minute
            minute -= timedelta(minutes=1)
        return None


@cache
def _parse(text: str) -> CronExpression:
    return CronExpression._build(text)  # an evaluator parses the same few crons every minute


def _parse_dom(expr: str) -> _DayOfMonth:
    field = "day-of-month"
    if expr == "L":
        return _DayOfMonth(last=True)
    if expr.endswith("W"):
        return _DayOfMonth(nearest_weekday=_number(expr[:-1], field, 1, 31))
    if "L" in expr or "W" in expr:
        raise CronError(f"{field}: {expr!r}: L and W stand alone ('L', '15W')")
    return _DayOfMonth(values=_values(expr, field, 1, 31))


def _parse_dow(expr: str) -> _DayOfWeek:
    field = "day-of-week"
    if "#" in expr:
        if "," in expr:
            raise CronError(f"{field}: {expr!r}: with '#' the field holds a single expression")
        day, _, nth = expr.partition("#")
        return _DayOfWeek(nth=(_number(day, field, 1, 7, _DAYS), _number(nth, field, 1, 5)))
    if expr == "L":
        return _DayOfWeek(values=frozenset({7}))  # the last day of the week: Saturday
    if expr.endswith("L"):
        return _DayOfWeek(last_of_month=_number(expr[:-1], field, 1, 7, _DAYS))
    return _DayOfWeek(values=_values(expr, field, 1, 7, _DAYS))


@cache
def available_timezones() -> frozenset[str]:
    return frozenset(_available_timezones())


def cron_body(value: str) -> str:
    """The config's check of a cron body: AWS's grammar, with the field at fault named."""
    CronExpression.parse(value)
    return value


def iana_timezone(value: str) -> str:
    """An IANA zone name as EventBridge Scheduler takes it (`Europe/Paris`), checked against the tz database."""
    zones = available_timezones()
    if value in zones or value == "UTC":
        return value
    close = difflib.get_close_matches(value, sorted(zones), n=3, cutoff=0.6) or [
        z for z in sorted(zones) if z.lower() == value.lower()]
    hint = f"; did you mean {', '.join(close)}?" if close else " (e.g. Europe/Paris, America/New_York, UTC)"
    raise ValueError(f"{value!r} is not an IANA time zone name{hint}")
