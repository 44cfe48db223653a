"""The e-mail settings page: the user turns each kind of notification on or off."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from . import services
from .forms import PreferencesForm


@login_required
@require_http_methods(["GET", "POST"])
def notification_settings(request):
    preference = services.preferences_for(request.user)
    # Every box unticked posts nothing but the token: bind on POST whatever the body.
    form = PreferencesForm(request.POST if request.method == "POST" else None, preference=preference)
    if request.method == "POST" and form.is_valid():
        services.preferences_update(user=request.user, values=form.cleaned_data)
        messages.success(request, "Your e-mail settings are saved.")
        return redirect("notification_settings")
    return render(request, "notifications/settings.html", {"form": form, "nav": "notifications"})
