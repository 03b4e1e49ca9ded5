import pytest
import torch

from deqkit.state import flatten, solver_dtype


def test_round_trip_of_nested_state():
    state = {"a": torch.randn(3, 2, 2), "b": (torch.randn(3, 5), [torch.randn(3, 1)])}
    flat, spec = flatten(state)
    assert flat.shape == (3, 4 + 5 + 1)
    back = spec.unflatten(flat)
    assert torch.equal(back["a"], state["a"])
    assert torch.equal(back["b"][0], state["b"][0])
    assert torch.equal(back["b"][1][0], state["b"][1][0])


def test_single_tensor_flatten_is_a_view():
    z = torch.randn(4, 3, 2)
    flat, spec = flatten(z)
    assert flat.data_ptr() == z.data_ptr()
    assert spec.unflatten(flat).shape == z.shape


def test_half_precision_solves_in_float32():
    flat, spec = flatten(torch.ones(2, 3, dtype=torch.bfloat16))
    assert flat.dtype == torch.float32
    assert spec.unflatten(flat).dtype == torch.bfloat16
    assert solver_dtype(torch.float64) == torch.float64


@pytest.mark.parametrize(
    "state, message",
    [
        ((torch.ones(2, 3), torch.ones(3, 3)), "batch size 3"),
        ((), "at least one tensor"),
        ((torch.ones(2, 3), 1.0), "must be a tensor"),
        (torch.tensor(1.0), "scalar"),
    ],
)
def test_bad_states_are_named(state, message):
    with pytest.raises((ValueError, TypeError), match=message):
        flatten(state)


def test_integer_state_is_rejected():
    with pytest.raises(TypeError, match="floating point"):
        flatten(torch.ones(2, 3, dtype=torch.long))


def test_flatten_like_checks_structure_shape_and_dtype():
    _, spec = flatten((torch.ones(2, 3), torch.ones(2, 4)))
    with pytest.raises(ValueError, match="structure"):
        spec.flatten_like(torch.ones(2, 7))
    with pytest.raises(ValueError, match="shape"):
        spec.flatten_like((torch.ones(2, 3), torch.ones(2, 5)))
    with pytest.raises(TypeError, match="dtype"):
        spec.flatten_like((torch.ones(2, 3), torch.ones(2, 4, dtype=torch.float64)))
