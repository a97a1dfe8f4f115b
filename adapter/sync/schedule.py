"""Schedules: fixed intervals (``every 30s``) and 5-field cron expressions (``0 2 * * *``).

Both answer ``next_after(instant)``: the first tick strictly after an aware instant.
Interval ticks are aligned to the Unix epoch, so every instance computes the same
ticks — that is what lets the scheduler run a tick once across instances.
Cron fields are minute, hour, day of month, month, day of week (0 or 7 = Sunday),
each ``*``, a number, a range ``a-b``, a list ``a,b`` and steps ``*/n`` / ``a-b/n``;
month and weekday names (``jan``, ``mon``) work too.  Cron runs in the server's
local time unless a zone is given.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Protocol

from ..errors import ConfigurationError

_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}
_EVERY = re.compile(r"^every\s+(\d+)\s*([a-z]+)$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class Schedule(Protocol):
    def next_after(self, instant: dt.datetime) -> dt.datetime: ...


@dataclass(frozen=True)
class IntervalSchedule:
    seconds: int
    text: str = ""

    def next_after(self, instant: dt.datetime) -> dt.datetime:
        _aware(instant)
        elapsed = (instant - _EPOCH).total_seconds()
        ticks = int(elapsed // self.seconds) + 1
        return _EPOCH + dt.timedelta(seconds=ticks * self.seconds)

    def __str__(self) -> str:
        return self.text or f"every {self.seconds}s"


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday … 6 = Sunday (Python's weekday())
    day_restricted: bool
    weekday_restricted: bool
    text: str = ""
    tz: dt.tzinfo | None = None  # None: the server's local time

    def matches_day(self, day: dt.date) -> bool:
        in_dom = day.day in self.days
        in_dow = day.weekday() in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return in_dom or in_dow  # classic cron: either field may match
        return in_dom and in_dow

    def next_after(self, instant: dt.datetime) -> dt.datetime:
        _aware(instant)
        local = (instant.astimezone(self.tz) if self.tz else instant.astimezone()).replace(tzinfo=None)
        candidate = local.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = candidate + dt.timedelta(days=366 * 5)  # e.g. "0 0 29 2 *" needs up to 8 years only with dow
        while candidate <= limit:
            if candidate.month not in self.months:
                year, month = (candidate.year + 1, 1) if candidate.month == 12 else (candidate.year, candidate.month + 1)
                candidate = dt.datetime(year, month, 1)
            elif not self.matches_day(candidate.date()):
                candidate = dt.datetime.combine(candidate.date() + dt.timedelta(days=1), dt.time())
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + dt.timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += dt.timedelta(minutes=1)
            else:
                aware = candidate.replace(tzinfo=self.tz) if self.tz else candidate.astimezone()
                return aware.astimezone(dt.timezone.utc)
        raise ConfigurationError(f"cron {self.text!r} never fires; check day of month and month")

    def __str__(self) -> str:
        return self.text


_MONTHS = {name: i for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_WEEKDAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS = (  # name, low, high, names
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)


def parse_schedule(text: str, *, tz: dt.tzinfo | None = None) -> IntervalSchedule | CronSchedule:
    """``every 30s`` / ``every 5m`` / ``every 1h`` / ``every 1d``, or a 5-field cron expression."""
    cleaned = " ".join(str(text).strip().lower().split())
    match = _EVERY.match(cleaned)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        if unit not in _UNITS:
            raise ConfigurationError(f"schedule {text!r}: unknown unit {unit!r}; use s, m, h or d (e.g. 'every 30s')")
        if amount <= 0:
            raise ConfigurationError(f"schedule {text!r}: the interval must be positive (e.g. 'every 30s')")
        return IntervalSchedule(amount * _UNITS[unit], text=cleaned)
    if cleaned.startswith("every"):
        raise ConfigurationError(f"schedule {text!r}: write 'every <number><unit>', e.g. 'every 30s' or 'every 5m'")
    return parse_cron(cleaned, tz=tz)


def parse_cron(text: str, *, tz: dt.tzinfo | None = None) -> CronSchedule:
    parts = text.split()
    if len(parts) != 5:
        raise ConfigurationError(
            f"cron {text!r} has {len(parts)} fields; give 5: minute hour day-of-month month day-of-week "
            "(e.g. '0 2 * * *' for 02:00 daily), or an interval like 'every 30s'"
        )
    sets = [_parse_field(part, *spec, expression=text) for part, spec in zip(parts, _FIELDS)]
    weekdays = frozenset({(d - 1) % 7 for d in sets[4]})  # cron 0/7 = Sunday → Python 6
    return CronSchedule(
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        day_restricted=parts[2] != "*",
        weekday_restricted=parts[4] != "*",
        text=text,
        tz=tz,
    )


def _parse_field(part: str, name: str, low: int, high: int, names: dict[str, int], *, expression: str) -> frozenset[int]:
    def fail(why: str) -> ConfigurationError:
        return ConfigurationError(f"cron {expression!r}: {name} field {part!r} {why}; allowed {low}-{high}, "
                                  "*, lists a,b, ranges a-b and steps */n")

    def number(token: str) -> int:
        if token in names:
            return names[token]
        if not token.isdigit():
            raise fail(f"has {token!r}, not a number")
        value = int(token)
        if not low <= value <= high:
            raise fail(f"has {value}, out of range")
        return value

    values: set[int] = set()
    for item in part.split(","):
        if not item:
            raise fail("has an empty list item")
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise fail(f"has step {step_text!r}; a step is a positive number")
            step = int(step_text)
        if base == "*":
            start, stop = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, stop = number(first), number(last)
            if start > stop:
                raise fail(f"has range {base!r} running backwards")
        else:
            start = number(base)
            stop = high if step_text else start  # "5/15" means from 5 every 15
        values.update(range(start, stop + 1, step))
    return frozenset(values)


def _aware(instant: dt.datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} has no time zone; schedules work on aware datetimes")
