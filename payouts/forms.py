"""Forms of the payouts page. They only shape input; the rules live in `services`."""
from django import forms

from .models import MethodType


class PayPalForm(forms.Form):
    email = forms.EmailField(label="PayPal e-mail address", max_length=254)


class WiseForm(forms.Form):
    recipient = forms.CharField(label="Wise recipient account id", max_length=20,
                                help_text="The numeric id of the recipient account in your Wise profile.")


class PayoutRequestForm(forms.Form):
    amount = forms.CharField(label="Amount", max_length=20, help_text="In dollars and cents, e.g. 25.00.")
    method = forms.ChoiceField(label="Pay to", choices=MethodType.choices)

    def __init__(self, *args, methods=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = [(m.type, str(m)) for m in methods] or MethodType.choices
