"""Template publishing applied set-based: a run of consecutive `template.published` events with a
number of SQL statements that does not grow with the run, exactly as the step
(`steps._on_template_published`) applies them one by one. `referrals.engine.apply.apply_events`
dispatches runs here ("Ordering").
"""
from itertools import takewhile

from ..models import Account, Event, Template
from . import bulk
from . import events as ev
from .configuration import Programs


def apply_template_run(run: list[Event], programs: Programs, *, replay: bool) -> int:
    """Apply the longest prefix of `run`'s publications that can go set-based; returns its length
    (0: none). It ends at the first one the step would reject or must write itself (see
    `_left_to_step`), which the engine then hands to the step."""
    head = list(takewhile(lambda event: event.type == ev.TEMPLATE_PUBLISHED, run))
    accounts = {account.external_id: account for account in Account.objects.select_for_update().filter(
        external_id__any_of={event.payload.get("account") for event in head} - {None}).only("id", "external_id")}
    templates = {template.external_id: template for template in Template.objects.select_for_update().filter(
        external_id__any_of={event.payload.get("template") for event in head} - {None})}

    # In id order, on the rows in memory: a publication sees the templates the ones before it
    # in the run created or renamed.
    planned: list[Event] = []
    created: dict[str, Template] = {}
    renamed: dict[str, Template] = {}
    for event in head:
        account = accounts.get(event.payload.get("account"))
        if _left_to_step(event, account):
            break
        external_id, name = event.payload["template"], event.payload.get("name", "")
        template = templates.get(external_id)
        if template is not None and template.creator_id != account.pk:
            break  # published by another account: the step rejects it
        if template is None:
            template = templates[external_id] = created[external_id] = Template(
                external_id=external_id, creator_id=account.pk, name=name)
        elif name:
            template.name = name
            if external_id not in created:
                renamed[external_id] = template
        planned.append(event)
    if not planned:
        return 0
    if created:
        Template.objects.bulk_create(created.values())
    bulk.update_rows(Template, renamed.values(), ["name"])
    return len(planned)


def _left_to_step(event: Event, account: Account | None) -> bool:
    """Where the run ends and the step takes the publication: an unknown account (the step
    rejects it) and an event logged under another account id than its payload's (the step
    rewrites it)."""
    return account is None or event.account_id != account.pk or not event.payload.get("template")


__all__ = ["apply_template_run"]
