"""Programme configuration as the engine applies it: one loader per batch of events.

Every programme figure an event's effects depend on (rates, kinds, gates, holds, thresholds)
is read through `load_programs`, once per batch (one query: every version of every programme,
`referrals.engine.versions`), and picked per event by `Programs.enabled`: the version in force at the
event's occurred_at. A late-arriving event is applied with the rules of its own time, so a
replay after any edit gives the same balances.
"""
from datetime import datetime

from ..models import Program
from . import versions


class Programs:
    """The programme configuration a batch is applied with."""

    def __init__(self, loaded: versions.Versions, times: list[datetime]):
        self._loaded = loaded
        self._times = sorted(set(times))
        self._cache: dict[tuple, list[Program]] = {}

    def enabled(self, *kinds, at: datetime | None = None) -> list[Program]:
        """The enabled programmes of these kinds in force at `at` (the event's occurred_at).

        Without `at`: every programme enabled at some event time of the batch (the newest such
        version of each), for loading the state the batch's rules may need."""
        # Events between the same two version times share their configuration.
        key = (kinds, None if at is None else self._loaded.epoch(at))
        if key not in self._cache:
            if at is not None:
                self._cache[key] = self._loaded.at(at, kinds=kinds)
            else:
                union: dict[int, Program] = {}
                for time in self._times:
                    union.update((p.pk, p) for p in self._loaded.at(time, kinds=kinds))
                self._cache[key] = sorted(union.values(), key=lambda p: (p.preset, p.key))
        return self._cache[key]


def load_programs(events) -> Programs:
    """The programme configuration for a batch of events (one query)."""
    return Programs(versions.load(), [event.occurred_at for event in events])


__all__ = ["Programs", "load_programs"]
