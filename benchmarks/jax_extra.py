"""The JAX section's extra rows (small problem, gradients, failure policy, torch vs JAX), its
targets and its report (``results/JAX.md``, ``results/jax_times.png``)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import jax_bench
import jax_problems
import jaxopt
import numpy as np
import optimistix as optx
import torch

import deqkit as dk
import deqkit.jax as dkj


def _small(tol, reps):
    """B=1, D=32 tanh map, fixed point, jitted: deqkit vs jaxopt vs optimistix."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((32, 32))
    W = jnp.asarray(0.8 * W / np.linalg.norm(W, 2), jnp.float32)
    x = jnp.asarray(rng.standard_normal((1, 32)), jnp.float32)
    z0 = jnp.zeros((1, 32), jnp.float32)
    abs_tol = tol * float(jnp.linalg.norm(jnp.tanh(x)))

    def ours(W, z0, x):
        return dkj.solve(lambda z: jnp.tanh(z @ W.T + x), z0, "fixed_point", tol=tol).z

    def jo(W, z0, x):
        s = jaxopt.FixedPointIteration(
            lambda z, W, x: jnp.tanh(z @ W.T + x), tol=abs_tol, implicit_diff=False
        )
        return s.run(z0, W, x).params

    def ox(W, z0, x):
        solver = optx.FixedPointIteration(rtol=0.0, atol=abs_tol, norm=optx.two_norm)
        return optx.fixed_point(lambda z, a: jnp.tanh(z @ W.T + x), solver, z0, throw=False).value

    out = {}
    for name, fn in (("deqkit", ours), ("jaxopt", jo), ("optimistix", ox)):
        comp, compiled = jax_bench.compile_seconds(lambda fn=fn: fn, (W, z0, x))
        out[name] = {
            "time_s": jax_bench.timed(compiled, (W, z0, x), reps * 20)[0],
            "compile_s": comp,
        }
    return out


def _gradients(tol, reps):
    """value_and_grad of sum(z*²) on (a), per-sample stopping for deqkit, whole batch for peers."""
    apply, params, x, z0, _ = jax_problems.make("a")
    abs_tol = tol * float(jnp.linalg.norm(apply(params, z0, x)))

    def loss_ours(solver):
        def loss(p):
            z, _ = dkj.fixed_point(
                lambda z: apply(p, z, x), z0, solver, tol=tol, on_failure="ignore"
            )
            return (z**2).sum()

        return loss

    def loss_jaxopt(kind):
        cls = {"fixed_point": jaxopt.FixedPointIteration, "anderson": jaxopt.AndersonAcceleration}

        def loss(p):
            s = cls[kind](lambda z, p: apply(p, z, x), tol=abs_tol, maxiter=50, implicit_diff=True)
            return (s.run(z0, p).params ** 2).sum()

        return loss

    def loss_optx(p):
        solver = optx.FixedPointIteration(rtol=0.0, atol=abs_tol, norm=optx.two_norm)
        sol = optx.fixed_point(
            lambda z, p: apply(p, z, x),
            solver,
            z0,
            p,
            max_steps=50,
            throw=False,
            adjoint=optx.ImplicitAdjoint(),
        )
        return (sol.value**2).sum()

    rows = {}
    for name, loss in (
        ("deqkit fixed_point", loss_ours("fixed_point")),
        ("deqkit anderson", loss_ours("anderson")),
        ("jaxopt fixed_point", loss_jaxopt("fixed_point")),
        ("jaxopt anderson", loss_jaxopt("anderson")),
        ("optimistix fixed_point", loss_optx),
    ):
        comp, compiled = jax_bench.compile_seconds(
            lambda loss=loss: jax.value_and_grad(loss), (params,)
        )
        rows[name] = {"time_s": jax_bench.timed(compiled, (params,), reps)[0], "compile_s": comp}
    return rows


def _failure_policy(tol, reps):
    """Jitted converged solve on (a) with on_failure "warn" vs "ignore"."""
    apply, params, x, z0, prob = jax_problems.make("a")
    out = {}
    for policy in ("ignore", "warn"):
        make = jax_bench.deqkit_solve(apply, "fixed_point", tol, prob.max_iter, "sample", policy)
        _, compiled = jax_bench.compile_seconds(make, (params, z0, x))
        out[policy] = jax_bench.timed(compiled, (params, z0, x), reps * 2)[0]
    return out


def _torch_vs_jax(tol, reps):
    """The same f in both backends, 1 thread: deqkit (torch) vs deqkit.jax, per-sample stopping."""
    torch.set_num_threads(1)
    out = {}
    for key in "ab":
        apply, params, x, z0, prob = jax_problems.make(key)
        for solver in ("fixed_point", "anderson", "broyden"):
            times = []
            with torch.no_grad():
                for _ in range(reps + 1):
                    start = time.perf_counter()
                    dk.solve(
                        prob.f,
                        prob.z0,
                        solver,
                        tol=tol,
                        max_iter=prob.max_iter,
                        on_failure="ignore",
                    )
                    times.append(time.perf_counter() - start)
            make = jax_bench.deqkit_solve(apply, solver, tol, prob.max_iter, "sample")
            _, compiled = jax_bench.compile_seconds(make, (params, z0, x))
            jt = jax_bench.timed(compiled, (params, z0, x), reps)[0]
            out[f"{key} {solver}"] = {"torch_s": min(times[1:]), "jax_s": jt}
    return out


def measure(tol, reps, log):
    extra = {"small": _small(tol, reps)}
    log(f"  B=1 D=32: {extra['small']}")
    extra["gradients"] = _gradients(tol, reps)
    log(f"  gradients (a): {extra['gradients']}")
    extra["failure_policy"] = _failure_policy(tol, reps)
    log(f"  failure policy (a): {extra['failure_policy']}")
    extra["torch_vs_jax"] = _torch_vs_jax(tol, reps)
    log(f"  torch vs JAX: {extra['torch_vs_jax']}")
    return extra


def targets(rows, extra):
    """``[(name, ok, detail)]``: the issue's targets, as ratios within this run."""
    checks = []
    peers_of = {
        "fixed_point": ("jaxopt", "optimistix"),
        "anderson": ("jaxopt",),
        "broyden": ("jaxopt",),
    }
    for row in rows:
        if row["library"] != "deqkit":
            continue
        peers = [
            r
            for r in rows
            if r["library"] in peers_of[row["solver"]]
            and r["problem"] == row["problem"]
            and r["mode"] == row["mode"]
            and r["solver"] == row["solver"]
        ]
        reached = [r for r in peers if r["above_tol"] == 0]
        where = f"({row['problem']}) {row['mode']} {row['solver']}"
        floor = row["floor_s"] / row["time_s"] if row["floor_s"] else float("nan")
        if reached:
            best = min(reached, key=lambda r: r["time_s"])
            ratio = row["time_s"] / best["time_s"]
            checks.append(
                (
                    f"steady {where}",
                    ratio <= 1.0 and row["above_tol"] == 0,
                    f"{ratio:.2f}x {best['library']} (floor {floor:.2f}x ours; ours above "
                    f"tol {row['above_tol']})",
                )
            )
        else:
            checks.append(
                (
                    f"steady {where}",
                    True,
                    "no peer reaches tol: not a target "
                    f"(ours above tol {row['above_tol']}, floor {floor:.2f}x ours)",
                )
            )
        if peers:
            best = min(peers, key=lambda r: r["compile_s"])
            ratio = row["compile_s"] / best["compile_s"]
            checks.append((f"compile {where}", ratio <= 1.0, f"{ratio:.2f}x {best['library']}"))
    tj = extra["torch_vs_jax"]["a broyden"]
    ratio = tj["jax_s"] / tj["torch_s"]
    checks.append(("JAX Broyden <= torch Broyden on (a)", ratio <= 1.0, f"{ratio:.2f}x"))
    fp = extra["failure_policy"]
    ratio = fp["warn"] / fp["ignore"]
    checks.append(
        ("failure policy free on a converged solve", ratio <= 1.03, f"warn/ignore {ratio:.3f}")
    )
    small = extra["small"]
    best = min(small["jaxopt"]["time_s"], small["optimistix"]["time_s"])
    ratio = small["deqkit"]["time_s"] / best
    checks.append(("B=1 D=32 fixed point", ratio <= 1.0, f"{ratio:.2f}x best peer"))
    return checks


def write_markdown(path, rows, extra, checks, env):
    lines = [
        f"# JAX section ({env['date']}, jax {env['jax']}, peers {env['peers']}, "
        f"1 XLA thread, load {env['load_start']} -> {env['load_end']}, {env['seconds']:.0f} s)",
        "",
        "| prob | mode | library | solver | time ms | floor ms | compile s | nfev | "
        "residual | above tol |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = f"{r['floor_s'] * 1e3:.2f}" if r["floor_s"] else "-"
        lines.append(
            f"| {r['problem']} | {r['mode']} | {r['library']} | {r['solver']} | "
            f"{r['time_s'] * 1e3:.2f} | {floor} | {r['compile_s']:.2f} | {r['nfev']} | "
            f"{r['residual']:.1e} | {r['above_tol']}/{r['batch']} |"
        )
    lines += [
        "",
        "## Extras",
        "",
        "```",
        *(f"{k}: {v}" for k, v in extra.items()),
        "```",
        "",
        "## Targets",
        "",
    ]
    lines += [f"- {'PASS' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in checks]
    path.write_text("\n".join(lines) + "\n")


def plot(path, rows):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes, "abd", strict=True):
        sub = [r for r in rows if r["problem"] == key]
        labels = [f"{r['mode'][0]} {r['library'][:6]} {r['solver'][:5]}" for r in sub]
        ax.barh(
            labels,
            [r["time_s"] * 1e3 for r in sub],
            color=["C0" if r["library"] == "deqkit" else "C1" for r in sub],
        )
        ax.set_title(f"({key}) steady time, ms (b=batch, s=per sample)")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
