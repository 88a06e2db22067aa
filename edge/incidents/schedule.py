"""Arming schedules: when a rule is allowed to raise incidents.

Times are the site's local wall-clock times in an IANA time zone, so a window
of 22:00-06:00 follows daylight-saving changes the way a guard's shift does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleError(ValueError):
    """An arming schedule or window that cannot be used."""


@dataclass(frozen=True, slots=True)
class ArmingWindow:
    """Weekdays and a local time range during which a rule is armed.

    Attributes:
        weekdays: days the window starts on, 0 = Monday .. 6 = Sunday.
        start: local start time, inclusive.
        end: local end time, exclusive. An end at or before `start` makes the
            window run past midnight into the next day, so 22:00-06:00 on
            Friday covers Friday night until Saturday 06:00. start == end
            covers the whole 24 hours from `start`.
    """

    weekdays: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.weekdays:
            raise ScheduleError("arming window has no weekdays; give at least one")
        invalid = sorted(day for day in self.weekdays if not 0 <= day <= 6)
        if invalid:
            raise ScheduleError(
                f"arming window weekdays {invalid} are invalid; use 0 (Monday) "
                "to 6 (Sunday)"
            )

    @classmethod
    def parse(cls, days: Iterable[str], start: str, end: str) -> ArmingWindow:
        """Build a window from day names ('mon'..'sun') and 'HH:MM' times.

        Raises:
            ScheduleError: naming the day or time that cannot be read.
        """
        weekdays = set()
        for day in days:
            key = day.strip().lower()[:3]
            if key not in WEEKDAY_NAMES:
                raise ScheduleError(
                    f"weekday {day!r} is invalid; use one of {', '.join(WEEKDAY_NAMES)}"
                )
            weekdays.add(WEEKDAY_NAMES.index(key))
        return cls(frozenset(weekdays), _parse_time(start), _parse_time(end))

    def contains(self, local: datetime) -> bool:
        """Return True when the local time falls inside this window."""
        clock = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.start < self.end:
            return day in self.weekdays and self.start <= clock < self.end
        if clock >= self.start and day in self.weekdays:
            return True
        # The part after midnight belongs to the window of the previous day.
        previous_day = (day - 1) % 7
        return previous_day in self.weekdays and clock < self.end


def _parse_time(text: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ScheduleError(
            f"time {text!r} is invalid; write local time as HH:MM or HH:MM:SS"
        ) from None


@dataclass(frozen=True, slots=True)
class ArmingSchedule:
    """The windows during which a rule is armed, in one IANA time zone.

    Attributes:
        timezone: IANA zone name of the site, for example 'Europe/Prague'.
        windows: armed windows; the rule is armed while any of them contains
            the current local time.
    """

    timezone: str
    windows: tuple[ArmingWindow, ...]

    def __post_init__(self) -> None:
        if not self.windows:
            raise ScheduleError(
                "arming schedule has no windows; give at least one, or no "
                "schedule at all for a rule that is always armed"
            )
        self.zone()

    def zone(self) -> ZoneInfo:
        """Return the schedule's time zone.

        Raises:
            ScheduleError: when the name is not in the IANA database.
        """
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(
                f"time zone {self.timezone!r} is not an IANA zone name; use a "
                "name such as 'Europe/Prague' or 'UTC'"
            ) from None

    def is_armed(self, at: datetime) -> bool:
        """Return True when the schedule is armed at the aware time `at`."""
        if at.tzinfo is None:
            raise ScheduleError(f"naive datetime {at!r}; pass a timezone-aware time")
        local = at.astimezone(self.zone())
        return any(window.contains(local) for window in self.windows)

    @classmethod
    def always(cls, timezone: str = "UTC") -> ArmingSchedule:
        """Return a schedule that is armed every day, all day."""
        return cls(timezone, (ArmingWindow(frozenset(range(7)), time(0), time(0)),))
