"""Both backends configure solvers and backwards through the same option records."""

from dataclasses import fields

import pytest

import deqkit as dk
import deqkit.jax as dkj


@pytest.mark.parametrize(
    "torch_cls, jax_cls",
    [
        (dk.FixedPoint, dkj.FixedPoint),
        (dk.Anderson, dkj.Anderson),
        (dk.Broyden, dkj.Broyden),
        (dk.NewtonKrylov, dkj.NewtonKrylov),
        (dk.Phantom, dkj.Phantom),
        (dk.Implicit, dkj.Implicit),
    ],
)
def test_same_fields_defaults_and_validation(torch_cls, jax_cls):
    def spec(cls):
        return [(f.name, f.default) for f in fields(cls)]

    assert spec(torch_cls) == spec(jax_cls)
    record = [c for c in torch_cls.__mro__ if c.__name__.endswith("Options")][0]
    assert record in jax_cls.__mro__
    first = fields(torch_cls)[0].name
    for cls in (torch_cls, jax_cls):
        with pytest.raises((TypeError, ValueError), match=rf"{cls.__name__}\.|unknown solver"):
            cls(**{first: -1 if first != "solver" else "nope"})
