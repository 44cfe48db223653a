"""The e-mail settings form: one checkbox per notification kind."""
from django import forms

from .models import Kind


class PreferencesForm(forms.Form):
    def __init__(self, *args, preference=None, **kwargs):
        super().__init__(*args, **kwargs)
        for kind in Kind:
            self.fields[kind.value] = forms.BooleanField(
                label=kind.label, required=False,
                initial=getattr(preference, kind.value) if preference is not None else True)
