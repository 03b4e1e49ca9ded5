"""Every private or moving JAX API deqkit relies on, in one place (tested in tests/jax).

``jax.extend.core`` is JAX's sanctioned home for ``ClosedJaxpr`` and ``jaxpr_as_fun`` since
0.4.2x; older releases kept them in ``jax.core``. Nothing else in ``deqkit.jax`` reaches past
the public API.
"""

from __future__ import annotations

try:
    from jax.extend.core import ClosedJaxpr, jaxpr_as_fun
except ImportError:  # pragma: no cover - older JAX
    from jax.core import ClosedJaxpr, jaxpr_as_fun  # type: ignore[no-redef,attr-defined]

from jax.core import Tracer

__all__ = ["ClosedJaxpr", "Tracer", "jaxpr_as_fun"]
