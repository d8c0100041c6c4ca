"""Cron schedules as CronJobs write them: five fields (minute hour day-of-month month
day-of-week) with ``*``, ``*/n``, ranges, lists and names, or a macro such as ``@hourly``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_SEARCH_DAYS = 366 * 5  # the farthest a valid schedule's next run can be (Feb 29 on a Monday...)


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day-of-month was "*"
    any_weekday: bool
    zone: dt.tzinfo

    @classmethod
    def parse(cls, text: str, time_zone: str | None = None) -> Schedule:
        fields = _MACROS.get(text.strip(), text).split()
        if len(fields) != 5:
            raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: {text!r}")
        minute, hour, day, month, weekday = fields
        weekdays = frozenset(d % 7 for d in _field(weekday, 0, 7, _DAYS))
        return cls(_field(minute, 0, 59), _field(hour, 0, 23), _field(day, 1, 31), _field(month, 1, 12, _MONTHS),
                   weekdays, day in ("*", "?"), weekday in ("*", "?"),
                   ZoneInfo(time_zone) if time_zone else dt.UTC)

    def next_after(self, seconds: float) -> float:
        """The first scheduled time strictly after ``seconds`` (epoch)."""
        start = dt.datetime.fromtimestamp(seconds, self.zone).replace(second=0, microsecond=0)
        start += dt.timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(_SEARCH_DAYS):
            if day.month in self.months and self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        when = day.replace(hour=hour, minute=minute)
                        if when >= start:
                            return when.timestamp()
            day = (day + dt.timedelta(days=1)).replace(hour=0, minute=0)
        raise ScheduleError("the schedule never fires")

    def _day_matches(self, day: dt.datetime) -> bool:
        by_date = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # cron: when both are restricted, either one matches
            return by_date and by_weekday
        return by_date or by_weekday


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body in ("*", "?"):
            first, last = low, high
        elif "-" in body:
            first, last = (_value(v, names) for v in body.split("-", 1))
        else:
            first = _value(body, names)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high) or first > last or step < 1:
            raise ScheduleError(f"value out of range in {text!r} ({low}-{high})")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int] | None) -> int:
    if names and text in names:
        return names[text]
    try:
        return int(text)
    except ValueError:
        raise ScheduleError(f"failed to parse int from {text!r}") from None
