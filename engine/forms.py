"""Forms for Task scripts' human steps: `input_form = MyForm` on a script makes its waiting
step take (and validate) that form's fields; `DecisionForm` is the Approve/Reject step.

    from django import forms
    from engine.forms import DecisionForm

    class ApprovalForm(DecisionForm):
        amount = forms.DecimalField(min_value=0, decimal_places=2)
"""

from engine.flows.humans import DecisionForm

__all__ = ["DecisionForm"]
