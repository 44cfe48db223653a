"""What the decision desks (applications, payouts, fraud flags) share: decision buttons on the
change page that post the same admin action as the list (so the same permission checks run), and
a return to the page the decision was made on."""
from django.contrib.admin.utils import unquote
from django.http import HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme


class DecisionDeskMixin:
    #: (action name, button label) pairs shown on the change page to staff allowed to decide.
    decisions: tuple[tuple[str, str], ...] = ()
    #: The list page's title and one line on how to work the desk.
    desk_title = ""
    desk_help = ""

    change_list_template = "admin/backoffice/desk_change_list.html"

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "desk_help": self.desk_help}
        if self.desk_title:
            extra_context["title"] = self.desk_title
        return super().changelist_view(request, extra_context)

    def decision_applies(self, name: str, obj) -> bool:
        """Whether a decision makes sense for the object in its current state (the service decides)."""
        return True

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id)) if object_id else None
        allowed = set(self.get_actions(request))
        decisions = [(name, label) for name, label in self.decisions
                     if name in allowed and obj is not None and self.decision_applies(name, obj)]
        extra_context = {**(extra_context or {}), "decisions": decisions}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def response_action(self, request, queryset):
        response = super().response_action(request, queryset)
        back = request.POST.get("next", "")
        if (isinstance(response, HttpResponseRedirect) and back
                and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                                    require_https=request.is_secure())):
            return HttpResponseRedirect(back)
        return response
