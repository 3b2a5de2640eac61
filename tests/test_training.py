"""The training core: no leakage, class-aware sampling, determinism, resumable runs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from phyllodes.data.clinical import ClinicalEncoder
from phyllodes.study import open_study
from phyllodes.train import runs as runs_mod
from phyllodes.train.grid import grid_specs, run_grid
from phyllodes.train.runs import execute_run, load_predictions
from phyllodes.train.spec import RunSpec
from phyllodes.train.trainer import class_aware_sampler, train_run, warmup_cosine


@pytest.fixture
def study(synthetic_cohort_dir, output_root):
    return open_study("smoke", synthetic_cohort_dir, device="cpu", seed=0,
                      output_dir=str(output_root), image_size=32)


@pytest.mark.parametrize("spec", [RunSpec("clinical", "logreg", fold=1),
                                  RunSpec("multimodal", "resnet10t", "concat", fold=0)],
                         ids=["logreg", "multimodal"])
def test_no_subject_in_train_and_test_and_preprocessing_fit_on_train_only(study, spec):
    out = train_run(study, spec, progress=False)
    parts = out.extra["subjects"]
    test_fold = set(study.splits.loc[study.splits["fold"] == spec.fold, "subject_id"])
    assert set(parts["test"]) == test_fold
    assert not set(parts["train"]) & set(parts["test"])
    assert not set(parts["val"]) & set(parts["test"])
    assert not set(parts["train"]) & set(parts["val"])
    enc = out.extra["clinical_encoder"]
    assert set(enc.fitted_subjects) == set(parts["train"])
    # predictions: test rows are exactly the test fold's images, val rows the val subjects'
    p = out.predictions
    assert set(p.loc[p["split"] == "test", "subject_id"]) == test_fold
    assert set(p.loc[p["split"] == "val", "subject_id"]) == set(parts["val"])
    n_test_images = study.cohort.images["subject_id"].isin(test_fold).sum()
    assert (p["split"] == "test").sum() == n_test_images


def test_clinical_transformer_never_sees_test_values(study):
    """Changing the test subjects' clinical values must not change the fitted preprocessing."""
    cohort = study.cohort
    train_ids = study.splits.loc[study.splits["fold"] != 0, "subject_id"].tolist()
    test_ids = study.splits.loc[study.splits["fold"] == 0, "subject_id"].tolist()
    a = ClinicalEncoder(cohort).fit(train_ids)
    poisoned = cohort.images.copy()
    poisoned.loc[poisoned["subject_id"].isin(test_ids), "age"] = 1e6
    poisoned.loc[poisoned["subject_id"].isin(test_ids), "race"] = "unseen"
    cohort.images, original = poisoned, cohort.images
    try:
        b = ClinicalEncoder(cohort).fit(train_ids)
    finally:
        cohort.images = original
    sa = a.transformers["subject"].named_transformers_["num"].named_steps["scale"]
    sb = b.transformers["subject"].named_transformers_["num"].named_steps["scale"]
    np.testing.assert_array_equal(sa.mean_, sb.mean_)
    np.testing.assert_array_equal(sa.scale_, sb.scale_)
    assert a.feature_names == b.feature_names
    # and an encoder fit on all subjects would have seen them (the check can fail)
    cohort.images = poisoned
    try:
        c = ClinicalEncoder(cohort).fit(train_ids + test_ids)
    finally:
        cohort.images = original
    assert c.transformers["subject"].named_transformers_["num"].named_steps["scale"].mean_[0] > 1e4


def test_class_aware_sampler_draws_classes_evenly():
    y = np.array([0] * 900 + [1] * 100)
    draws = []
    s = class_aware_sampler(y, seed=0)
    for _ in range(10):
        draws.extend(list(s))
    frac = y[np.array(draws)].mean()
    n = len(draws)
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / n)  # 4 standard errors around one half
    assert len(draws) == 10 * len(y)
    # without class-aware weights the positive fraction would be 0.1
    assert frac > 0.4


def test_warmup_cosine_schedule():
    f = warmup_cosine(100, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5, abs=0.01) and f(99) < 0.01


def test_same_seed_same_predictions_on_cpu(study):
    spec = RunSpec("multimodal", "resnet10t", "gated", fold=1, seed=3)
    a = train_run(study, spec, progress=False)
    b = train_run(study, spec, progress=False)
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    c = train_run(study, RunSpec("multimodal", "resnet10t", "gated", 1, 4), progress=False)
    assert not np.allclose(a.predictions["prob"], c.predictions["prob"])


def test_the_cached_recipe_is_bit_for_bit_reproducible(study, tmp_path, monkeypatch):
    """The recipe's path (frozen prefix over cached views, LP init, late fusion) twice, the
    view cache rebuilt from scratch each time: the same predictions, bit for bit (what
    ./run_all.sh --check relies on)."""
    from dataclasses import replace
    spec = RunSpec("multimodal", "efficientnet_lite0", "late", fold=1, seed=2)
    assert study.profile.cache_views and study.profile.lp_init
    out = []
    for i in range(2):  # a fresh study each time: empty memory, an empty disk cache
        fresh = replace(study, cache_dir=tmp_path / f"cache{i}", memory={})
        out.append(train_run(fresh, spec, progress=False).predictions)
        assert list((tmp_path / f"cache{i}" / "views").glob("*.pt"))  # built anew
    pd.testing.assert_frame_equal(out[0], out[1], check_exact=True)


def test_interrupted_grid_resumes_without_recomputing(study, tmp_path, monkeypatch):
    specs = grid_specs(["clinical", "image"], {"clinical": ["mlp", "logreg"],
                                              "image": ["resnet10t"]}, ["concat"], [0, 1], [0])
    calls = []
    real_train = runs_mod.train_run

    def counting(*a, **k):
        calls.append(a[1])
        return real_train(*a, **k)
    monkeypatch.setattr(runs_mod, "train_run", counting)

    k = 3

    def crash_after_k(spec):
        if len(calls) > k:
            raise KeyboardInterrupt("simulated interruption")
    with pytest.raises(KeyboardInterrupt):
        for s in specs:
            execute_run(study, s, progress=False, before_write=crash_after_k)
    finished = sorted(p.name for p in study.runs_dir.iterdir()
                      if (p / "metrics.json").exists())
    assert len(finished) == k
    assert not any(p.name.endswith(".partial") and (p / "metrics.json").exists()
                   for p in study.runs_dir.iterdir())
    mtimes = {n: (study.runs_dir / n / "metrics.json").stat().st_mtime_ns
              for n in finished}
    calls.clear()
    dirs = run_grid(study, specs, progress=False)
    assert len(calls) == len(specs) - k  # only the unfinished runs were trained
    for n, t in mtimes.items():
        assert (study.runs_dir / n / "metrics.json").stat().st_mtime_ns == t
    resumed = load_predictions(dirs)

    # an uninterrupted grid elsewhere gives identical results
    other = open_study("smoke", study.cohort.root, device="cpu", seed=0,
                       output_dir=str(tmp_path / "fresh"), image_size=32)
    fresh = load_predictions(run_grid(other, specs, progress=False))
    pd.testing.assert_frame_equal(resumed, fresh)
    # asked again, nothing is recomputed
    calls.clear()
    run_grid(study, specs, progress=False)
    assert calls == []


def test_run_folder_contents(study):
    d = execute_run(study, RunSpec("clinical", "mlp", fold=0), progress=False)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["spec"]["modality"] == "clinical" and cfg["cohort_fingerprint"]
    m = json.loads((d / "metrics.json").read_text())
    assert 0 <= m["test"]["auc"] <= 1 and m["epochs_run"] >= 1
    p = pd.read_csv(d / "predictions.csv")
    assert {"subject_id", "image_path", "fold", "split", "y", "prob"} <= set(p.columns)
    model = json.loads((d / "model.json").read_text())  # the model as data: no pickle
    assert model["kind"] == "network" and model["n_clinical"] > 0
    assert (d / "weights.safetensors").is_file() and not list(d.glob("*.pt"))
    # a changed training setting gives another run id
    other = open_study("smoke", study.cohort.root, device="cpu", seed=0,
                       output_dir=study.outputs.root, image_size=32, clinical_epochs=7)
    d2 = execute_run(other, RunSpec("clinical", "mlp", fold=0), progress=False)
    assert d2 != d


def test_command_line_run_and_grid(synthetic_cohort_dir, tmp_path, capsys):
    from phyllodes.__main__ import main
    args = ["--profile", "smoke", "--cohort", str(synthetic_cohort_dir), "--device", "cpu",
            "--output", str(tmp_path)]
    assert main(["run", *args, "--modality", "clinical", "--model", "logreg", "--fold", "1"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert "clinical-logreg-f1-s0-" in first
    assert main(["grid", *args, "--modalities", "clinical", "--clinical-models", "logreg,mlp",
                 "--folds", "0,1"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if "/runs/" in line]
    assert len(listed) == 4 and first in listed  # the finished run is reused


@pytest.mark.slow
def test_torch_compile_option_trains_the_same_model(study):
    """profile.compile wraps the training forward in torch.compile: one epoch gives the same
    loss and weights as eager (dropout off: the compiled graph draws its own dropout masks)."""
    from phyllodes.train.runs import run_config
    from phyllodes.train.spec import run_seed
    from phyllodes.train.trainer import Trainer, fold_partition
    image_spec = RunSpec("multimodal", "resnet10t", "concat", fold=0, seed=0)
    parts = fold_partition(study.cohort, study.splits, 0, 0.2, run_seed(image_spec))
    with pytest.raises(ValueError, match="compile=True is not supported with frozen_bn"):
        Trainer(study.with_settings(compile=True), parts, image_spec)
    # the clinical network: the same compile path at a fraction of the CPU compile time (the
    # image networks are compiled on a GPU by scripts/gpu_check.sh)
    spec = RunSpec("clinical", "mlp", fold=0, seed=0)
    eager = Trainer(study.with_settings(frozen_bn=False, dropout=0.0), parts, spec)
    compiled_study = study.with_settings(frozen_bn=False, dropout=0.0, compile=True)
    compiled = Trainer(compiled_study, parts, spec)
    assert compiled.epoch() == pytest.approx(eager.epoch(), rel=1e-4)
    for (name, a), b in zip(eager.model.state_dict().items(),
                            compiled.model.state_dict().values()):
        if a.is_floating_point():
            scale = float(a.abs().max()) + 1e-8
            assert float((a - b).abs().max()) <= 1e-4 * scale, name
    # compile is part of the run's identity
    key = study.image_key()
    assert run_config(study, spec, key)["settings"]["compile"] is False
    assert run_config(compiled_study, spec, key)["settings"]["compile"] is True


def test_linear_probe_runs_fold_by_fold_and_never_fits_on_test_subjects(study):
    from phyllodes.keys import probe_name
    from phyllodes.train import probe
    spec = RunSpec("image", probe_name("resnet10t"), fold=1)
    assert spec.is_probe and not spec.is_network and spec.encoder == "resnet10t"
    assert spec.label == "image · resnet10t linear probe"
    out = train_run(study, spec, progress=False)
    p = out.predictions
    test_fold = set(study.splits.loc[study.splits["fold"] == 1, "subject_id"])
    assert set(p.loc[p["split"] == "test", "subject_id"]) == test_fold
    assert out.extra["probe_C"] in probe.C_GRID and len(out.history) == len(probe.C_GRID)
    # the features are fold-independent and computed once; the fit sees train rows only:
    # poisoning the test rows' features changes nothing of the fitted model
    (key, x), = [(k, v) for k, v in study.memory.items()
                 if k[0] == "probe_features" and k[1] == "resnet10t"]
    rows = {k: np.flatnonzero(study.cohort.images["subject_id"].isin(out.extra["subjects"][k]))
            for k in ("train", "val", "test")}
    y = study.cohort.images["y"].to_numpy()
    s = study.cohort.images["subject_id"].to_numpy()
    a, ca, _ = probe.fit_probe(x, y, s, rows)
    poisoned = x.copy()
    poisoned[rows["test"]] = 1e6
    b, cb, _ = probe.fit_probe(poisoned, y, s, rows)
    assert ca == cb
    np.testing.assert_array_equal(a[-1].coef_, b[-1].coef_)


def test_precision_is_fp32_for_cpu_training_unless_asked():
    """bf16 training steps were measured slower than fp32 on the CPU (README "Performance"):
    'auto' keeps fp32 there and uses bf16 on CUDA only."""
    from phyllodes.profiles import get_profile
    from phyllodes.train.trainer import autocast_dtype
    quick = get_profile("quick")
    assert quick.precision == "auto" and autocast_dtype(quick, "cpu") is None
    assert autocast_dtype(quick, "cuda") == torch.bfloat16
    assert autocast_dtype(get_profile("quick", precision="bf16"), "cpu") == torch.bfloat16
    assert autocast_dtype(get_profile("quick", precision="fp32"), "cuda") is None


def test_view_cache_is_computed_once_shared_by_folds_and_kept_on_disk(study, monkeypatch):
    from phyllodes.train import views
    from phyllodes.train.trainer import Trainer, fold_partition
    spec = RunSpec("image", "efficientnet_lite0", fold=0)
    pretrained = study.with_settings(pretrained="if_cached")  # the same ImageNet prefix
    profile = pretrained.profile
    calls = []
    real = views._run
    monkeypatch.setattr(views, "_run", lambda *a, **k: calls.append(1) or real(*a, **k))
    tr = {}
    for fold in (0, 1):
        s = RunSpec("image", "efficientnet_lite0", fold=fold)
        parts = fold_partition(study.cohort, study.splits, fold, 0.2, seed=fold)
        tr[fold] = Trainer(pretrained, parts, s)
    k = profile.cache_views
    assert tr[0].cached and len(calls) == 2 + k  # clean, flip, K views: once for both folds
    assert tr[0].views is tr[1].views
    v = tr[0].views
    assert v["views"].shape[:2] == (k, len(study.cohort.images))
    assert v["views"].dtype == torch.float32  # fp32 on a CPU: the same on every CPU
    from dataclasses import replace
    parts = fold_partition(study.cohort, study.splits, 0, 0.2, seed=0)
    # a new process (empty memory): read from disk, not recomputed
    again = Trainer(replace(pretrained, memory={}), parts, spec).views
    assert len(calls) == 2 + k and torch.equal(again["views"], v["views"])
    # a random-init prefix (another run seed) is another cache, never a stale one
    rnd = Trainer(study, parts, spec)
    assert not torch.equal(rnd.views["clean"], v["clean"])
    # the prefix is frozen: training changes none of its weights
    before = views.prefix_digest(tr[0].model)
    tr[0].epoch()
    assert views.prefix_digest(tr[0].model) == before


def test_view_cache_is_the_same_numbers_whichever_layout_builds_it(study, tmp_path,
                                                                    monkeypatch):
    """The cached views are a function of their key: a network in the default layout (an
    exported model or a reloaded run) builds the same tensors as the training run's
    channels-last one (notebook 07 builds BUS-BRA's views from an exported model, then trains
    on them), and a process with other CPU kernels gets a cache of its own."""
    from phyllodes import kernels
    from phyllodes.models.network import PhyllodesNet
    from phyllodes.train import views
    torch.manual_seed(0)
    net = PhyllodesNet("image", encoder="efficientnet_lite0", pretrained=False, img_size=32,
                       frozen_stages=2)
    images = study.images()
    plain = views.view_cache(net, images, 2, memory={}, cache_dir=tmp_path / "a")
    run = views.view_cache(copy.deepcopy(net).to_run_layout("cpu"), images, 2, memory={},
                           cache_dir=tmp_path / "b")
    # the two layouts round differently (~1e-7 per layer): the cache must not depend on it
    x = images.images[:8].float().div(255.0).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert not torch.equal(net.encode_prefix(x),
                               copy.deepcopy(net).to_run_layout("cpu").encode_prefix(x))
    for name in ("clean", "flip", "views"):
        assert torch.equal(plain[name], run[name]), name
    assert net.training  # the caller's network is left as it was
    key = views.view_cache_key(net, images, 2, torch.float32)
    monkeypatch.setattr(kernels, "tag", lambda: "native")
    assert views.view_cache_key(net, images, 2, torch.float32) != key


def test_augmented_view_tta_averages_the_named_views(study):
    """``tta_views``: a prediction is the mean probability over the image, its flip and its
    first K augmented views (cached ones with ``cache_views``; else drawn with a fixed seed,
    the same on every call)."""
    from dataclasses import replace

    from phyllodes.models.network import predict_proba
    from phyllodes.train.trainer import Trainer, fold_partition
    spec = RunSpec("image", "efficientnet_lite0", fold=0)
    parts = fold_partition(study.cohort, study.splits, 0, 0.2, seed=0)
    views_study = study.with_settings(tta_flip=True, tta_views=2)
    profile = views_study.profile
    tr = Trainer(views_study, parts, spec)
    assert tr.cached
    tr.epoch()
    rows = tr.rows["test"]
    clin = tr.x_clin[rows]
    inputs = [tr.views["clean"][rows], tr.views["flip"][rows], tr.views["views"][0][rows],
              tr.views["views"][1][rows]]
    each = [predict_proba(tr.model, x, clin, 64, None, prefix=True) for x in inputs]
    got = tr.predict("test")
    np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-6, atol=1e-7)
    assert np.abs(got - np.mean(each[:2], axis=0)).max() > 1e-4  # the views count
    tr.profile = replace(profile, tta_views=0)
    np.testing.assert_allclose(tr.predict("test"), np.mean(each[:2], axis=0), rtol=1e-6,
                               atol=1e-7)
    # end to end (no cache): views drawn with a fixed seed, the same on every call
    tr2 = Trainer(views_study.with_settings(cache_views=0), parts, spec)
    assert not tr2.cached
    a, b = tr2.predict("test"), tr2.predict("test")
    np.testing.assert_array_equal(a, b)
    tr2.profile = replace(tr2.profile, tta_views=0)
    assert np.abs(a - tr2.predict("test")).max() > 1e-4
    # the per-epoch monitoring skips the augmented views; the final predictions use them
    tr.profile = profile
    np.testing.assert_allclose(tr.predict("test", views=False), np.mean(each[:2], axis=0),
                               rtol=1e-6, atol=1e-7)
