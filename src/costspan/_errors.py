"""costspan's warnings and exceptions.

::

    UserWarning
     └── UnpricedModelWarning       a call's model has no known price (once per model)
    LookupError
     └── UnpricedModelError         COSTSPAN_ON_UNPRICED=raise and a budgeted call has no price
"""

from __future__ import annotations


class UnpricedModelWarning(UserWarning):
    """A call used a model that neither genai-prices nor a price override knows.

    The call is recorded with ``costspan.unpriced=true`` and counted in the
    ``costspan.calls.unpriced`` metric, never as a silent $0. Warned once per provider and model.
    Add the model with ``costspan.configure(prices=...)`` or ``COSTSPAN_PRICES``.
    """


class UnpricedModelError(LookupError):
    """Raised before a request is sent when ``on_unpriced="raise"`` and its model has no price.

    Attributes:
        model: the model the call asked for.
        provider: the ``gen_ai.provider.name`` of the call.
    """

    def __init__(self, model: str, provider: str) -> None:
        super().__init__(
            f"no price is known for model {model!r} of provider {provider!r}, and "
            "COSTSPAN_ON_UNPRICED=raise refuses calls that cannot be priced; add the model with "
            "costspan.configure(prices={...}) or COSTSPAN_PRICES"
        )
        self.model = model
        self.provider = provider
