"""The option records of every solver and backward (kept at this path; they live in
:mod:`deqkit.core.options`). Imports neither torch nor jax.

>>> from deqkit.options import AndersonOptions
>>> AndersonOptions(m=3)
AndersonOptions(m=3, lam=0.0001, damping=1.0)
"""

from .core.options import *  # noqa: F403
from .core.options import __all__  # noqa: F401
