"""A DEQ layer for JAX with the torch ``deqkit.DEQ``'s hooks, as a function of its parameters.

``DEQ(cell, ...)`` is a frozen (hashable, so static under ``jax.jit``) record of options; calling
it as ``deq(params, x)`` solves z* = cell(params, z*, x). Nothing is registered with a framework:
``params`` is any pytree, so the same layer serves Flax (``module.apply`` inside the cell),
Haiku (lifted parameters), Equinox (the module as ``params``) and plain dictionaries. The hooks
mirror the torch layer's:

* fixed-depth pretraining: ``deq.pretrain(n)`` returns a layer that applies the cell n times
  explicitly (backpropagated like any deep network) instead of solving; ``pretrain(0)`` solves;
* the Skip-DEQ initialiser: ``init(params, x)`` proposes z0 and ``sol.outputs.skip_loss`` trains
  it towards z*;
* the Jacobian penalty (``jac_reg_prob``, ``jac_reg_vecs``) in ``sol.outputs.jac_loss``;
* ``n_states=k`` states along the solver path in ``sol.outputs.states`` for
  :func:`~deqkit.jax.fixed_point_correction`.

Training-mode behaviour (the eval budget, the penalty) is chosen per call with ``training=``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from .._validate import check_bool, check_choice, check_float, check_int
from ..core import DEFAULTS, FAILURE_POLICIES, check_compatible, stop_residual
from ._state import flatten
from .backward import Backward, OneStep, Phantom, make_backward
from .deq import _prepare, fixed_point, solve
from .losses import jacobian_penalty, skip_loss
from .solvers import Solution, Solver, StatusCode, make_solver
from .solvers.base import check_loop_options, residuals
from .solvers.solution import LayerOutputs

__all__ = ["DEQ", "sample_points", "unroll"]


def sample_points(n_states: int, max_iter: int) -> list[int]:
    """Iterations at which the k states are taken: evenly spaced, the last at ``max_iter``
    (the rule of the torch layer).

    >>> sample_points(3, 10), sample_points(2, 24), sample_points(1, 5)
    ([3, 6, 10], [12, 24], [5])
    """
    check_int("n_states", n_states, minimum=1)
    if n_states > max_iter:
        raise ValueError(f"n_states ({n_states}) must not exceed max_iter ({max_iter})")
    return [(max_iter * (i + 1)) // n_states for i in range(n_states)]


def unroll(
    f: Callable[[Any], Any], z0: Any, steps: int, *, tol: float, stop_mode: str, n_states: int = 1
) -> tuple[Any, Solution]:
    """Apply f ``steps`` times from z0 (held constant), differentiably: pretraining's forward.

    Returns ``(z, solution)`` like :func:`~deqkit.jax.fixed_point`; the residual is that of the
    last step, ‖z_n − z_{n−1}‖ (no extra call of f), ``nstep`` and ``nfev`` are ``steps``. With
    ``n_states=k`` the states after the steps of :func:`sample_points` are in
    ``solution.outputs.states``. The twin of ``deqkit.pretrain.unroll``.

    >>> import jax.numpy as jnp
    >>> z, sol = unroll(lambda z: 0.5 * z + 1.0, jnp.zeros((2, 1)), 30, tol=1e-6, stop_mode="rel")
    >>> round(float(z[0, 0]), 4), sol.nstep.tolist(), sol.status.name
    (2.0, [30, 30], 'CONVERGED')
    """
    check_int("steps", steps, minimum=1)
    points = set(sample_points(n_states, steps)[:-1])
    z = jax.tree_util.tree_map(jax.lax.stop_gradient, z0)
    prev, states = z, []
    for k in range(1, steps + 1):
        prev, z = z, f(z)
        if k in points:
            states.append(z)
    flat_prev, _ = flatten(prev, "z")
    flat_z, _ = flatten(z, "f(z)")
    abs_r, rel_r = jax.lax.stop_gradient(residuals(flat_prev, flat_z))
    scale = jax.lax.stop_gradient(jnp.linalg.norm(flat_z, axis=1))
    res = rel_r if stop_mode == "rel" else stop_residual(stop_mode, abs_r, scale)
    finite = jnp.isfinite(res)
    converged = finite & (res <= tol)
    status = jnp.where(
        ~jnp.all(finite), 3, jnp.where(jnp.all(converged), 0, 1)
    )  # NONFINITE, CONVERGED, MAX_ITER
    sol = Solution(
        z=z,
        status=StatusCode(status.astype(jnp.int32)),
        converged=converged,
        nstep=jnp.full(flat_z.shape[:1], steps, jnp.int32),
        residual=res,
        abs_residual=abs_r,
        rel_residual=rel_r,
        nfev=jnp.asarray(steps, jnp.int32),
        stop_mode=stop_mode,
        tol=float(tol),
        outputs=LayerOutputs(states=(states + [z]) if n_states > 1 else None),
    )
    return z, sol


@dataclass(frozen=True)
class DEQ:
    """A deep equilibrium layer: ``deq(params, x, *args)`` returns z* = cell(params, z*, x, *args).

    Args:
        cell: called as ``cell(params, z, x, *args)``; a pure function of its arguments.
        solver, backward: as in :func:`~deqkit.jax.fixed_point`.
        tol, max_iter, stop_mode, stop_scope, on_failure, trace: as in :func:`~deqkit.jax.solve`.
        eval_max_iter: iteration budget when called with ``training=False`` (else ``max_iter``).
        init: optional ``init(params, x)`` proposing z0 when the caller passes none (Skip-DEQ);
            ``sol.outputs.skip_loss`` then holds mean (z0 − z*)² to train it.
        n_states: k > 1 returns k states along the solver path in ``sol.outputs.states``; the
            last is z itself.
        jac_reg_prob: in training, the probability per call of computing the Jacobian penalty
            (:func:`~deqkit.jax.jacobian_penalty` at z*) into ``sol.outputs.jac_loss`` (zero when
            not drawn; None with ``training=False`` or when 0). Needs ``key=``.
        jac_reg_vecs: Hutchinson probe vectors for the penalty.
        pretrain_steps: > 0 applies the cell this many times instead of solving (see
            :meth:`pretrain`).

    Without ``z0`` the initial state is ``init(params, x)``, else zeros shaped like ``x``.

    >>> import jax, jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> deq = dkj.DEQ(lambda p, z, x: jnp.tanh(z @ p["W"].T + x), tol=1e-6, max_iter=40)
    >>> params = {"W": 0.5 * jnp.eye(4)}
    >>> z, sol = deq(params, jnp.ones((8, 4)))
    >>> z.shape, sol.status.name
    ((8, 4), 'CONVERGED')
    >>> grads = jax.grad(lambda p: jnp.sum(deq(p, jnp.ones((8, 4)))[0]))(params)
    """

    cell: Callable
    solver: Any = DEFAULTS["solver"]
    backward: Any = DEFAULTS["backward"]
    tol: float = DEFAULTS["tol"]
    max_iter: int = DEFAULTS["max_iter"]
    stop_mode: str = DEFAULTS["stop_mode"]
    stop_scope: str = DEFAULTS["stop_scope"]
    eval_max_iter: int | None = None
    on_failure: str = DEFAULTS["on_failure"]
    trace: bool = False
    init: Callable | None = None
    n_states: int = 1
    jac_reg_prob: float = 0.0
    jac_reg_vecs: int = 1
    pretrain_steps: int = 0

    def __post_init__(self):
        if not callable(self.cell):
            raise TypeError(f"cell must be callable, got {type(self.cell).__name__}")
        if self.init is not None and not callable(self.init):
            raise TypeError(f"init must be callable, got {type(self.init).__name__}")
        solver: Solver = make_solver(self.solver)
        backward: Backward = make_backward(self.backward)
        check_compatible(solver, backward)
        object.__setattr__(self, "solver", solver)
        object.__setattr__(self, "backward", backward)
        ratio = DEFAULTS["divergence_ratio"]
        check_loop_options(
            self.tol, self.max_iter, self.stop_mode, self.trace, ratio, self.stop_scope
        )
        check_choice("on_failure", self.on_failure, FAILURE_POLICIES)
        if self.eval_max_iter is not None:
            check_int("eval_max_iter", self.eval_max_iter, minimum=1)
        sample_points(self.n_states, min(self.max_iter, self.eval_max_iter or self.max_iter))
        check_float("jac_reg_prob", self.jac_reg_prob, minimum=0.0, maximum=1.0)
        check_int("jac_reg_vecs", self.jac_reg_vecs, minimum=1)
        check_int("pretrain_steps", self.pretrain_steps, minimum=0)
        if self.pretrain_steps:
            sample_points(self.n_states, self.pretrain_steps)

    def pretrain(self, steps: int) -> DEQ:
        """This layer unrolling the cell ``steps`` times instead of solving (0: solving again).

        A new layer (the record is immutable), like ``deqkit.DEQ.pretrain`` returning the module.

        >>> import jax.numpy as jnp
        >>> deq = DEQ(lambda p, z, x: 0.5 * z + x).pretrain(3)
        >>> z, sol = deq(None, jnp.ones((1, 1)))  # 0.5 * (0.5 * (0.5 * 0 + 1) + 1) + 1
        >>> float(z[0, 0]), int(sol.nfev)
        (1.75, 3)
        """
        return dataclasses.replace(self, pretrain_steps=steps)

    def initial_state(self, params: Any, x: Any) -> Any:
        """z0 when the caller passes none: ``init(params, x)``, else zeros shaped like x."""
        if self.init is not None:
            return self.init(params, x)
        return jax.tree_util.tree_map(jnp.zeros_like, x)

    def __call__(
        self,
        params: Any,
        x: Any,
        *args: Any,
        z0: Any = None,
        key: jax.Array | None = None,
        training: bool = True,
    ) -> tuple[Any, Solution]:
        check_bool("training", training)
        draws = training and self.jac_reg_prob > 0
        if draws and key is None:
            raise ValueError("DEQ(jac_reg_prob > 0) needs key= (a PRNG key) when training")
        proposed = z0 is None and self.init is not None
        if z0 is None:
            z0 = self.initial_state(params, x)

        def f(z):
            return self.cell(params, z, x, *args)

        if self.pretrain_steps:
            z, sol = unroll(
                f, z0, self.pretrain_steps, tol=self.tol, stop_mode=self.stop_mode,
                n_states=self.n_states,
            )  # fmt: skip
            z_star = jax.tree_util.tree_map(jax.lax.stop_gradient, z)
        else:
            budget = self.max_iter if training or self.eval_max_iter is None else self.eval_max_iter
            z, sol = self._solve(f, z0, budget)
            z_star = sol.z
        outputs = sol.outputs
        if proposed:
            outputs = dataclasses.replace(outputs, skip_loss=skip_loss(z0, z_star))
        if draws:
            assert key is not None
            outputs = dataclasses.replace(outputs, jac_loss=self._penalty(f, z_star, key))
        return z, dataclasses.replace(sol, outputs=outputs)

    def _solve(self, f: Callable, z0: Any, budget: int) -> tuple[Any, Solution]:
        options: dict[str, Any] = dict(
            tol=self.tol, stop_mode=self.stop_mode, stop_scope=self.stop_scope,
            on_failure=self.on_failure, trace=self.trace,
        )  # fmt: skip
        points = sample_points(self.n_states, budget)
        if self.n_states == 1:
            return fixed_point(f, z0, self.solver, self.backward, max_iter=budget, **options)
        return _sampled_solve(f, z0, self.solver, self.backward, points, options)

    def _penalty(self, f: Callable, z_star: Any, key: jax.Array) -> jax.Array:
        draw_key, probe_key = jax.random.split(key)

        def penalty():
            return jacobian_penalty(f, z_star, probe_key, vecs=self.jac_reg_vecs)

        if self.jac_reg_prob == 1.0:
            return penalty()
        drawn = jax.random.uniform(draw_key) < self.jac_reg_prob
        zero = jnp.zeros((), flatten(z_star, "z*")[0].dtype)
        return jax.lax.cond(drawn, penalty, lambda: zero)


def _sampled_solve(f, z0, solver, backward, points, options) -> tuple[Any, Solution]:
    """k states along the path: the solve is run in k pieces ending at the sampled iterations.

    Piece i continues from piece i−1's state for ``pᵢ − pᵢ₋₁`` more steps (its first
    evaluation, of f at the state it starts from, is not a new step), so with the stateless
    "fixed_point" solver the states are those the torch layer samples from one solve; a solver
    with memory (Anderson, Broyden) restarts its memory at each sampled point. The last piece
    is the differentiable :func:`fixed_point` with the layer's backward; earlier states get a
    cheap gradient as in torch (the layer's backward when phantom or one-step, else one step).
    """
    cheap = backward if isinstance(backward, (Phantom, OneStep)) else OneStep()
    states, z, done = [], z0, 0
    nfev: Any = 0
    quiet = {**options, "on_failure": "ignore"}  # only the whole solve's outcome is reported
    for point in points[:-1]:
        piece = solve(f, z, solver, max_iter=point - done + (done > 0), **quiet)
        nfev += piece.nfev
        states.append(_attach(cheap, f, piece.z))
        z, done = piece.z, point
    last, sol = fixed_point(
        f, z, solver, backward, max_iter=points[-1] - done + (done > 0), **options
    )
    sol = dataclasses.replace(
        sol,
        nfev=sol.nfev + nfev,
        nstep=sol.nstep + done - (done > 0),
        outputs=LayerOutputs(states=states + [last]),
    )
    return last, sol


def _attach(cheap: Backward, f: Callable, z: Any) -> Any:
    """The cheap backward's output at a sampled state z (phantom steps or one step of f)."""
    flat0, spec, fn, consts, _ = _prepare(f, z)
    return spec.unflatten(cheap.attach(fn, flat0, consts, "ignore"))
