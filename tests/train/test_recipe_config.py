"""Recipe config: OmegaConf-typed sections, overrides, unknown keys rejected with the valid ones,
non-finite numbers refused, the core's registries and defaults."""

from __future__ import annotations

import pytest

import deqkit as dk
from deqkit.solvers import DEFAULTS
from deqkit.train.config import Config, DataConfig, DEQConfig, OptimConfig, deq_kwargs
from deqkit.train.errors import ConfigError
from deqkit.train.recipe import apply_overrides, load_config, parse, resolve_recipe


def test_load_and_override(recipe):
    cfg = load_config(recipe, ["optim.lr=3e-4", "deq.solver_options.m=6", "model.channels=8"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.deq.solver_options == {"m": 6}
    assert cfg.model_kwargs() == {"channels": 8, "dropout": 0.1}
    assert cfg.train.steps == 6 and cfg.data.eval_batch_size == 360


def test_round_trip_through_plain_dicts(recipe):
    cfg = load_config(recipe)
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.stepz=3", "unknown key 'train.stepz'; valid train keys: ['steps', 'eval_every'"),
        ("optimizer.lr=1", "valid sections: ['description', 'model', 'task', 'deq'"),
        ("train.steps", "must look like section.key=value"),
        ("train=3", "must name a key inside 'train'"),
        ("optim.lr=inf", "optim.lr must be a finite number, got inf"),
        ("optim.lr=nan", "optim.lr must be a finite number, got nan"),
        ("train.steps=2.5", "train.steps"),
        ("train.steps=abc", "train.steps"),
        ("data.pad=-1", "data.pad must be >= 0"),
        ("data.paddd=1", "unknown key 'data.paddd' for dataset 'digits'; valid data keys: ["),
    ],
)
def test_bad_override(recipe, override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(recipe, [override])
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"model": {"name": "m"}, "trian": {}}, "unknown recipe key(s) ['trian']"),
        ({"deq": {}}, "needs a 'model' mapping"),
        ({"model": {"name": "m"}, "data": {"nme": "x"}}, "'data.nme'"),
        ({"model": {"name": "m"}, "train": {"steps": 0}}, "train.steps must be >= 1"),
        ({"model": {"name": "m"}, "train": {"steps": True}}, "train.steps"),
        ({"model": {"name": "m"}, "optim": {"name": "lion"}}, "['adam', 'adamw', 'sgd']"),
        ({"model": {"name": "m"}, "data": {"name": "svhn"}}, "unknown dataset 'svhn'"),
        ({"model": {"name": "m"}, "deq": {"solver": "newton"}}, "deq.solver must be one of"),
        (
            {"model": {"name": "m"}, "deq": {"solver_options": {"mm": 3}}},
            "option(s) ['mm']; valid: ['m', 'lam', 'damping']",
        ),
        ({"model": {"name": "m"}, "deq": {"solver_options": {"m": 0}}}, "Anderson.m must be >= 1"),
        ({"model": {"name": "m"}, "deq": {"backward": "shine"}}, "deq: backward 'shine' reads"),
    ],
)
def test_bad_recipe(raw, fragment):
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert fragment in str(err.value)


def test_int_message_and_core_defaults_and_registries():
    with pytest.raises(ConfigError, match="must be an int, got"):
        DEQConfig(max_iter=2.5)
    assert (DEQConfig().tol, DEQConfig().max_iter) == (DEFAULTS["tol"], DEFAULTS["max_iter"])
    kw = deq_kwargs(DEQConfig(solver="broyden", backward="shine"))
    assert kw["backward"] == dk.Shine()


def test_deq_kwargs_build_objects():
    cfg = DEQConfig(
        solver="broyden",
        solver_options={"memory": 7},
        backward="phantom",
        backward_options={"steps": 3, "damping": 0.5},
        max_iter=12,
        eval_max_iter=30,
        n_states=2,
        jac_reg_prob=0.5,
    )
    kw = deq_kwargs(cfg)
    assert kw["solver"] == dk.Broyden(memory=7)
    assert kw["backward"] == dk.Phantom(steps=3, damping=0.5)
    assert (kw["max_iter"], kw["eval_max_iter"], kw["n_states"], kw["jac_reg_prob"]) == (
        12,
        30,
        2,
        0.5,
    )
    deq = dk.DEQ(lambda z, x: 0.5 * z + x, **kw)
    assert deq.max_iter == 12 and deq.n_states == 2


def test_section_defaults_and_coercion():
    assert DataConfig(batch_size=8).eval_batch_size == 32
    assert OptimConfig(grad_clip=0).grad_clip is None
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        DataConfig(val_fraction=1.0)
    assert apply_overrides({"model": {"name": "m"}}, ["train.steps=7"])["train"] == {"steps": 7}


def test_resolve_recipe_by_name_and_unknown():
    assert resolve_recipe("mdeq-digits").name == "mdeq-digits.yaml"
    with pytest.raises(ConfigError, match="known recipes: .*mdeq-digits"):
        resolve_recipe("mdeq-imagenet")


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"model: {name: [unclosed\n", "not valid YAML"),
        (b"model: {name: mdeq}\nmodel: {name: mdeq}\n", "duplicate key"),
        (b"model: {name: mdeq}\ndescription: \xff\xfe\n", "is not valid UTF-8"),
    ],
)
def test_unreadable_recipes_name_the_file(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_every_shipped_recipe_validates():
    from deqkit.zoo import recipe_paths

    paths = recipe_paths()
    assert "mdeq-digits" in paths
    for name, path in paths.items():
        cfg = load_config(path)
        assert cfg.description, f"recipe {name} has no description for `deqkit recipes`"
