"""Programme configuration as the engine applies it: one loader per batch of events.

Every programme figure an event's effects depend on (rates, kinds, gates, holds, thresholds)
is read through `load_programs`, once per batch, and picked per event by `Programs.enabled`.
Programme versions plug in here: load the versions in force over the batch's occurred_at
range, and let `enabled` pick the one in force at the event's occurred_at.
"""
from .models import Program


class Programs:
    """The programme configuration a batch is applied with."""

    def __init__(self, programs: list[Program]):
        self._programs = programs

    def enabled(self, *kinds, at=None) -> list[Program]:
        """The enabled programmes of these kinds in force at `at` (the event's occurred_at)."""
        return [p for p in self._programs if p.kind in kinds]


def load_programs(events) -> Programs:
    """The programme configuration for a batch of events (one query)."""
    return Programs(list(Program.objects.filter(enabled=True).order_by("id")))
