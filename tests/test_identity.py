"""A model's identity is its key; labels are for display, and a table row is one model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phyllodes.evaluate import comparisons
from phyllodes.keys import model_key, model_label, variant_key
from phyllodes.train import runs
from phyllodes.train.spec import RunSpec


def _preds(key: str, label: str, shift: float, n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Test and val rows of one model on ``n`` subjects over 2 folds (one image each)."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    prob = np.clip(0.5 + shift * (y - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    rows = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)],
                         "image_path": [f"s{i}.png" for i in range(n)],
                         "fold": np.arange(n) % 2, "y": y, "prob": prob})
    both = pd.concat([rows.assign(split="test"), rows.assign(split="val", fold=1 - rows["fold"])])
    return both.assign(modality="image", model="e", fusion="late", seed=0, pretrained=True,
                       model_key=key, model_label=label, run_id="r")


def test_a_random_init_model_has_its_own_key_and_a_variant_its_own():
    assert model_key("image", "e") == "image/e"
    assert model_key("image", "e", pretrained=False) == "image/e@random-init"
    assert model_key("multimodal", "e", "late", False) == "multimodal/e/late@random-init"
    assert model_key("clinical", "mlp", pretrained=False) == "clinical/mlp"  # no image branch
    assert variant_key("image/e", "no mixup") == "image/e@no mixup"
    with pytest.raises(ValueError, match="without '@'"):
        variant_key("image/e", "a@b")
    spec = RunSpec("image", "e")
    assert runs.run_key(spec, {"pretrained": False}) == "image/e@random-init"
    assert runs.run_label(spec, {"pretrained": False}) == model_label("image", "e",
                                                                      pretrained=False)


def test_a_models_label_is_found_by_its_key_and_an_ambiguous_one_is_an_error():
    preds = pd.DataFrame({"model_key": ["image/e", "multimodal/e/late", "multimodal/e/concat"],
                          "model_label": ["image · e", "multimodal · e · late",
                                          "multimodal · e · concat"]})
    assert comparisons.label_for(preds, "multimodal", "e", "concat") == "multimodal · e · concat"
    assert comparisons.label_for(preds, "image", "e", "late") == "image · e"  # no fusion
    rand = preds.iloc[:1].assign(model_key="image/e@random-init",
                                 model_label="image · e (random init)")
    assert comparisons.label_for(rand, "image", "e") == "image · e (random init)"
    both = pd.concat([preds, rand])
    with pytest.raises(ValueError, match="pass pretrained=True or False"):
        comparisons.label_for(both, "image", "e")
    assert comparisons.label_for(both, "image", "e", pretrained=False) == \
        "image · e (random init)"
    two = pd.concat([preds, preds.iloc[:1].assign(model_label="image · e, relabelled")])
    with pytest.raises(ValueError, match="key image/e"):
        comparisons.label_for(two, "image", "e")


def test_two_models_under_one_label_are_refused_not_pooled_into_one_row():
    a = _preds("image/e", "image · e", 0.6)
    b = _preds("image/e@random-init", "image · e", 0.1, seed=1)
    with pytest.raises(ValueError, match="model_label 'image · e' with several model_keys"):
        comparisons.comparison_table(pd.concat([a, b]), n_boot=20)
    with pytest.raises(ValueError, match="model_key 'image/e' with several model_labels"):
        comparisons.subject_predictions(pd.concat([a, a.assign(model_label="other")]))
    # named apart, they are two rows with their own numbers
    t = comparisons.comparison_table(pd.concat([comparisons.as_variant(a, "strong"),
                                                comparisons.as_variant(b, "weak")]), n_boot=20)
    auc = t.set_index("model_label")["auc_pooled_est"]
    assert set(auc.index) == {"strong", "weak"} and auc["strong"] > auc["weak"] + 0.2
    alone = comparisons.comparison_table(a, n_boot=20).set_index("model_label")
    assert auc["strong"] == pytest.approx(alone.at["image · e", "auc_pooled_est"], abs=1e-12)


def test_two_late_fusions_of_other_models_have_their_own_keys():
    a, b, c = (_preds(f"image/{m}", f"image · {m}", s, seed=i)
               for i, (m, s) in enumerate([("a", 0.5), ("b", 0.4), ("c", 0.3)]))
    preds = pd.concat([a, b, c], ignore_index=True)
    ab = comparisons.late_fusion(preds, ["image · a", "image · b"], "a+b")
    ac = comparisons.late_fusion(preds, ["image · a", "image · c"], "a+c")
    assert ab["model_key"].iloc[0] != ac["model_key"].iloc[0]
    both = comparisons.check_identity(pd.concat([preds, ab, ac]))  # one to one: no error
    assert both["model_label"].nunique() == both["model_key"].nunique() == 5
    # the fusion is the mean log-odds of its parts, image by image
    pa = a[a["split"] == "test"].set_index(["subject_id", "fold"])["prob"]
    pb = b[b["split"] == "test"].set_index(["subject_id", "fold"])["prob"]
    got = ab[ab["split"] == "test"].set_index(["subject_id", "fold"])["prob"]
    logit = (np.log(pa / (1 - pa)) + np.log(pb / (1 - pb))) / 2
    np.testing.assert_allclose(got.loc[pa.index], 1 / (1 + np.exp(-logit)), atol=1e-12)


def test_an_external_validation_refuses_two_models_under_one_label():
    from phyllodes.evaluate.external import Direction
    a = _preds("image/e", "image · e", 0.6)
    mixed = pd.concat([a, _preds("image/e@random-init", "image · e", 0.1, seed=1)])
    Direction(None, None, a, a, a)  # one to one: accepted
    for frames in ((mixed, a, a), (a, mixed, a), (a, a, mixed)):
        with pytest.raises(ValueError, match="several model_keys"):
            Direction(None, None, *frames)
