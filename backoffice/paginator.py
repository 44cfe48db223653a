"""A changelist paginator that never counts a whole big table.

Django's admin counts the filtered queryset on every changelist page (`SELECT COUNT(*)`), which
reads every row of a million-row ledger. This paginator counts at most `exact_up_to` + 1 rows
(`COUNT(*)` over a `LIMIT`ed subquery, bounded work); when there are more, it takes PostgreSQL's
planner estimate for the same query (`EXPLAIN`, which reads table statistics, not rows), and on
other databases stops at the cap. Page links then cover the first pages only, which is what staff
use on a huge table: they filter or search to narrow it down.
"""
import json

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property


class EstimatedCountPaginator(Paginator):
    exact_up_to = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list.order_by()
        capped = queryset[: self.exact_up_to + 1].count()
        if capped <= self.exact_up_to:
            return capped
        self.estimated = True
        return max(planner_estimate(queryset) or 0, capped)

    estimated = False


def planner_estimate(queryset) -> int | None:
    """How many rows PostgreSQL's planner expects the query to return; None elsewhere."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])
