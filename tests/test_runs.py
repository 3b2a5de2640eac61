"""Run ids: every result-changing setting and the recipe version are in them, nothing else."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from phyllodes import paths, recipe
from phyllodes.profiles import PROFILES, ROLES, SCOPES, Profile
from phyllodes.study import open_study
from phyllodes.train import runs
from phyllodes.train.spec import RunSpec

SPECS = {"classical": RunSpec("clinical", "logreg"), "mlp": RunSpec("clinical", "mlp"),
         "image": RunSpec("image", "resnet10t"),
         "multimodal": RunSpec("multimodal", "resnet10t", "concat"),
         "probe": RunSpec("image", "probe_resnet10t")}
#: which of SPECS each scope applies to
APPLIES = {"all": set(SPECS), "neural": {"mlp", "image", "multimodal"},
           "images": {"image", "multimodal", "probe"},
           "image_training": {"image", "multimodal"}, "probe": {"probe"},
           "clinical_mlp": {"mlp"}}


@pytest.fixture(scope="module")
def study(synthetic_cohort_dir, tmp_path_factory):
    return open_study("smoke", synthetic_cohort_dir, device="cpu", seed=0,
                      output_dir=str(tmp_path_factory.mktemp("out")), image_size=32)


def test_every_profile_field_declares_its_role_and_scope():
    for f in fields(Profile):
        assert f.metadata.get("role") in ROLES, f"Profile.{f.name} declares no role"
        assert f.metadata.get("scope") in SCOPES, f"Profile.{f.name} declares no scope"


def test_a_field_without_a_role_fails_the_check():
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Careless(Profile):
        new_lr: float = field(default=0.1)

    missing = [f.name for f in fields(Careless) if f.metadata.get("role") not in ROLES]
    assert missing == ["new_lr"]


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if isinstance(value, int) else value * 1.5 + 0.01
    if isinstance(value, str):
        return {"required": "none", "if_cached": "none", "none": "required"}.get(value,
                                                                                 value + "x")
    if isinstance(value, tuple):
        return value + ("x",)
    raise AssertionError(f"no change rule for {value!r}")


def _ids(study, profile):
    study = replace(study, profile=profile)
    return {k: runs.planned_run(study, s).run_id for k, s in SPECS.items()}


@pytest.mark.parametrize("name", [f.name for f in fields(Profile) if f.name != "image_size"])
def test_a_setting_changes_the_run_ids_it_applies_to_and_no_other(study, name):
    f = Profile.__dataclass_fields__[name]
    base = study.profile
    if name == "pretrained":  # hashed as the resolved yes/no; smoke's 'none' -> 'required'
        changed = replace(base, pretrained="required")
    elif name == "tta_views":  # at most cache_views: changed downwards
        changed = replace(base, tta_views=base.tta_views - 1)
    else:
        choices = f.metadata.get("choices")
        value = getattr(base, name)
        changed = replace(base, **{name: next(c for c in choices if c != value) if choices
                                   else _changed(value)})
    before, after = _ids(study, base), _ids(study, changed)
    role, scope = f.metadata["role"], f.metadata["scope"]
    for kind in SPECS:
        moved = before[kind] != after[kind]
        expected = role == "result" and kind in APPLIES[scope]
        assert moved == expected, (name, kind, role, scope)


def test_image_size_changes_image_runs_only(synthetic_cohort_dir, tmp_path):
    # image_size changes the image cache key as well
    a = open_study("smoke", synthetic_cohort_dir, device="cpu", output_dir=str(tmp_path),
                   image_size=32)
    b = open_study("smoke", synthetic_cohort_dir, device="cpu", output_dir=str(tmp_path),
                   image_size=40)
    ia, ib = _ids(a, a.profile), _ids(b, b.profile)
    assert {k for k in SPECS if ia[k] != ib[k]} == {"image", "multimodal", "probe"}


def test_bumping_the_recipe_version_makes_new_run_ids(study, monkeypatch):
    before = _ids(study, study.profile)
    monkeypatch.setattr(runs, "RECIPE_VERSION", recipe.RECIPE_VERSION + 1)
    after = _ids(study, study.profile)
    assert all(before[k] != after[k] for k in SPECS)


def test_the_cpu_kernels_are_part_of_every_run_id(study, monkeypatch):
    from phyllodes import kernels
    before = _ids(study, study.profile)
    assert runs.run_config(study, SPECS["image"], "key")["kernels"] == kernels.tag()
    monkeypatch.setattr(kernels, "tag", lambda: "native")
    after = _ids(study, study.profile)
    assert all(before[k] != after[k] for k in SPECS)


def test_recipe_code_fingerprint_is_recorded():
    now = recipe.recipe_fingerprint()
    assert now == recipe.RECIPE_SOURCE, (
        f"the training recipe's code changed (fingerprint {now}, recorded "
        f"{recipe.RECIPE_SOURCE}). If what a run computes changed, bump "
        f"phyllodes.recipe.RECIPE_VERSION; either way set RECIPE_SOURCE = '{now}'.")


def _package_copy(tmp_path):
    import shutil
    pkg = tmp_path / "phyllodes"
    shutil.copytree(recipe.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def _edit(path, old, new):
    src = path.read_text()
    assert old in src, old
    path.write_text(src.replace(old, new, 1))


def test_recipe_fingerprint_follows_training_code_not_docstrings_or_the_contract(tmp_path):
    pkg = _package_copy(tmp_path)
    base = recipe.recipe_fingerprint(pkg)
    # a docstring, a comment, a contract message, a new contract check: the same fingerprint
    _edit(pkg / "models" / "network.py", '"""One dual-branch network', '"""A network')
    (pkg / "models" / "network.py").write_text((pkg / "models" / "network.py").read_text()
                                               + "\n# a comment\n")
    _edit(pkg / "data" / "contract.py", "list at least one label", "name at least one label")
    _edit(pkg / "data" / "contract.py", "CHECKS = (check_columns,",
          "CHECKS = (lambda ck: None, check_columns,")
    assert recipe.recipe_fingerprint(pkg) == base
    # the training step: another fingerprint
    _edit(pkg / "train" / "trainer.py", "self.opt.zero_grad(set_to_none=True)",
          "self.opt.zero_grad(set_to_none=False)")
    assert recipe.recipe_fingerprint(pkg) != base


def test_cache_keys_follow_the_code_they_depend_on_not_its_docstrings(monkeypatch):
    """The image cache key hashes the decoding code, the view cache key the augmentation and
    the prefix's forward: a docstring edit keeps both, a code edit changes them."""
    from phyllodes.data import images
    from phyllodes.train import views

    def with_source(fn, edit):
        import inspect
        import textwrap
        src = textwrap.dedent(inspect.getsource(fn))
        return edit(src)
    img0, view0 = images.decoding_digest(), views.views_code_digest()
    real = recipe.inspect.getsource

    def fake(obj, edit):
        def getsource(o):
            s = real(o)
            return edit(s) if o is obj else s
        return getsource
    monkeypatch.setattr(recipe.inspect, "getsource", fake(
        images.augment, lambda s: s.replace("Random ultrasound-appropriate", "Random")))
    assert views.views_code_digest() == view0 and images.decoding_digest() == img0
    monkeypatch.setattr(recipe.inspect, "getsource", fake(
        images._draw, lambda s: s.replace('"flip": torch.rand(b', '"flip": 0.9 * torch.rand(b')))
    assert views.views_code_digest() != view0 and images.decoding_digest() == img0
    monkeypatch.setattr(recipe.inspect, "getsource", fake(
        images._apply, lambda s: s.replace("gain: float = 0.15", "gain: float = 0.25")))
    assert views.views_code_digest() != view0 and images.decoding_digest() == img0
    monkeypatch.setattr(recipe.inspect, "getsource", fake(
        images.square_box, lambda s: s.replace("(1 + 2 * margin)", "(1 + margin)")))
    assert images.decoding_digest() != img0 and views.views_code_digest() == view0
    assert with_source(images.square_box, str)  # the source is readable where it runs


def test_encoder_weights_file_content_is_in_the_id(study, tmp_path):
    w = tmp_path / "w.pth"
    w.write_bytes(b"one")
    spec = SPECS["image"]
    a = runs.planned_run(study, spec, str(w)).run_id
    w.write_bytes(b"two!")
    b = runs.planned_run(study, spec, str(w)).run_id
    assert a != b != runs.planned_run(study, spec).run_id
    assert runs.planned_run(study, SPECS["mlp"], str(w)).run_id == \
        runs.planned_run(study, SPECS["mlp"]).run_id  # no image branch: weights do not apply


def test_run_config_records_profile_commit_and_recipe(study):
    d = runs.execute_run(study, SPECS["classical"], progress=False)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["profile"] == json.loads(json.dumps(study.profile.to_dict()))
    assert cfg["recipe_version"] == recipe.RECIPE_VERSION
    assert set(cfg["code"]) == {"commit", "dirty"}
    import subprocess
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=paths.ROOT).stdout.strip()
    assert cfg["code"]["commit"] == (head or None)


def test_profiles_are_profiles():
    assert all(isinstance(p, Profile) and p.name == k for k, p in PROFILES.items())


@pytest.mark.parametrize("name", [f.name for f in fields(Profile) if f.metadata.get("choices")])
def test_a_setting_outside_its_choices_is_refused_by_name(name):
    """A typo ('shufle', 'fixd') must not fall back to a default behaviour silently."""
    from phyllodes.profiles import get_profile
    choices = Profile.__dataclass_fields__[name].metadata["choices"]
    for p in PROFILES.values():  # every shipped profile uses valid values
        assert getattr(p, name) in choices
    with pytest.raises(ValueError, match=rf"{name}='typo' is not one of"):
        get_profile("quick", **{name: "typo"})
    with pytest.raises(ValueError, match=name):
        replace(PROFILES["smoke"], **{name: "typo"})  # what Study.with_settings does


def test_more_test_time_views_than_cached_ones_are_refused():
    """With a view cache the test-time views are cached ones: asking for more would silently
    average fewer."""
    from phyllodes.profiles import get_profile
    assert get_profile("quick").tta_views == get_profile("quick").cache_views == 16
    with pytest.raises(ValueError, match="tta_views=17 must be between 0 and cache_views=16"):
        get_profile("quick", tta_views=17)
    with pytest.raises(ValueError, match="tta_views=-1"):
        get_profile("quick", tta_views=-1)
    assert get_profile("quick", cache_views=0, tta_views=32).tta_views == 32  # drawn on the fly


def test_the_settings_that_name_a_behaviour_declare_their_choices():
    named = {f.name for f in fields(Profile) if f.metadata.get("choices")}
    assert {"pretrained", "fusion", "image_head", "clinical_branch", "stopping", "sampler",
            "precision"} <= named


def test_recipe_screen_refuses_the_study_folds(capsys):
    """scripts/recipe_screen.py screens recipe changes; split seed 0 (the reported folds) is
    refused before anything is trained."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "scripts" / "recipe_screen.py"
    spec = importlib.util.spec_from_file_location("recipe_screen", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as e:
        mod.main(["image", "{}", "--splits", "2,0"])
    assert e.value.code == 2 and "split seed 0" in capsys.readouterr().err
