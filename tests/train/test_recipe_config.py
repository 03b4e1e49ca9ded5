"""Recipe config: typed sections, overrides, rejection of unknown keys with the valid list."""

from __future__ import annotations

import pytest

import deqkit as dk
from deqkit.train.config import (
    Config,
    DataConfig,
    OptimConfig,
    apply_overrides,
    deq_kwargs,
    load_config,
    resolve_recipe,
)


def test_load_and_override(recipe):
    cfg = load_config(recipe, ["optim.lr=3e-4", "deq.solver_options.m=6", "model.channels=8"])
    assert cfg.optim.lr == pytest.approx(3e-4)  # "3e-4" is a YAML string; coerced to float
    assert cfg.deq.solver_options == {"m": 6}
    assert cfg.model_kwargs() == {"channels": 8, "dropout": 0.1}
    assert cfg.train.steps == 6 and cfg.data.eval_batch_size == 360


def test_round_trip_through_plain_dicts(recipe):
    cfg = load_config(recipe)
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.stepz=3", "valid train keys: ['steps', 'eval_every'"),
        ("optimizer.lr=1", "valid sections: ['description', 'model', 'deq'"),
        ("train.steps", "must look like section.key=value"),
        ("train=3", "must name a key inside 'train'"),
        ("train.steps.x=3", "train.steps has no sub-keys"),
    ],
)
def test_bad_override_key(override, fragment):
    with pytest.raises(ValueError) as err:
        apply_overrides({"model": {"name": "m"}}, [override])
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "raw, error, fragment",
    [
        ({"model": {"name": "m"}, "trian": {}}, ValueError, "unknown recipe key(s) ['trian']"),
        ({"deq": {}}, ValueError, "needs a 'model' section"),
        (
            {"model": {"name": "m"}, "data": {"nme": "x"}},
            ValueError,
            "valid: ['name', 'batch_size'",
        ),
        ({"model": {"name": "m"}, "train": {"steps": "many"}}, TypeError, "train.steps must be a"),
        ({"model": {"name": "m"}, "train": {"steps": 0}}, ValueError, "train.steps must be >= 1"),
        (
            {"model": {"name": "m"}, "optim": {"name": "lion"}},
            ValueError,
            "('adam', 'adamw', 'sgd')",
        ),
        ({"model": {"name": "m"}, "data": {"name": "svhn"}}, ValueError, "'digits', 'mnist'"),
        ({"model": {"name": "m"}, "deq": {"solver": "newton"}}, ValueError, "deq.solver must be"),
        (
            {"model": {"name": "m"}, "deq": {"solver_options": {"mm": 3}}},
            ValueError,
            "option(s) ['mm']; valid: ['m', 'lam', 'damping']",
        ),
        (
            {"model": {"name": "m"}, "deq": {"solver_options": {"m": 0}}},
            ValueError,
            "Anderson.m must be >= 1",
        ),
    ],
)
def test_bad_recipe(raw, error, fragment):
    with pytest.raises(error) as err:
        Config.from_dict(raw)
    assert fragment in str(err.value)


def test_deq_kwargs_build_objects():
    kw = deq_kwargs(
        {
            "solver": "broyden",
            "solver_options": {"memory": 7},
            "backward": "phantom",
            "backward_options": {"steps": 3, "damping": 0.5},
            "max_iter": 12,
            "eval_max_iter": 30,
        }
    )
    assert kw["solver"] == dk.Broyden(memory=7)
    assert kw["backward"] == dk.Phantom(steps=3, damping=0.5)
    assert (kw["max_iter"], kw["eval_max_iter"], kw["tol"]) == (12, 30, 1e-3)
    deq = dk.DEQ(lambda z, x: 0.5 * z + x, **kw)
    assert deq.max_iter == 12


def test_section_defaults_and_coercion():
    assert DataConfig(batch_size=8).eval_batch_size == 32
    assert OptimConfig(grad_clip=0).grad_clip is None
    with pytest.raises(ValueError, match="val_fraction must be in"):
        DataConfig(val_fraction=1.0)


def test_resolve_recipe_by_name_and_unknown():
    assert resolve_recipe("mdeq-digits").name == "mdeq-digits.yaml"
    with pytest.raises(ValueError, match="known recipes: .*mdeq-digits"):
        resolve_recipe("mdeq-imagenet")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)


def test_every_shipped_recipe_validates():
    from deqkit.zoo import recipe_paths

    paths = recipe_paths()
    assert "mdeq-digits" in paths
    for name, path in paths.items():
        cfg = load_config(path)
        assert cfg.description, f"recipe {name} has no description for `deqkit recipes`"
