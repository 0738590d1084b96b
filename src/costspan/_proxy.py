"""A typed face for :class:`wrapt.ObjectProxy`, the base of costspan's transparent proxies.

wrapt's proxy forwards every attribute to the wrapped object, which a type checker cannot see;
this base declares ``__wrapped__`` as ``Any`` so proxy code type-checks strictly without
scattering ignores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wrapt

if TYPE_CHECKING:

    class ObjectProxy:
        __wrapped__: Any

        def __init__(self, wrapped: Any) -> None: ...

else:
    ObjectProxy = wrapt.ObjectProxy
