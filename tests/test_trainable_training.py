"""`trainable` vs `training`: the notebook's claims, checked on the installed Keras.

The probe in trainable_training.py measures what `layer.trainable` and the call-time
`training` argument do to BatchNormalization (BN) and Dropout. These tests check
three things against each other:

- the live measurement (`trainable_training.probe()`);
- the answers in `trainable_training.CLAIMS`, per Keras version range;
- the claims tables in the master notebook and in docs/trainable-vs-training.md.

Version-dependent expectations are keyed on the Keras version: on 3.0 to 3.15,
`fit()` overrides the `training` value recorded in a functional model; from
3.16 on (keras-team/keras PR #23364, issue #20285) it is honoured, as on Keras 2.
The Keras 2 column is measured too, by the same probe in a subprocess with
`TF_USE_LEGACY_KERAS=1` and `tf-keras` (requirements-keras2.txt). Every test uses
tiny models and runs in a few seconds.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]

import trainable_training  # noqa: E402
import utils  # noqa: E402

NOTEBOOK = (
    ROOT
    / "course"
    / "source"
    / "Transfer_learning_with_MobileNet"
    / "Transfer_learning_with_MobileNet.py"
)
DOCS = ROOT / "docs" / "trainable-vs-training.md"
CLAIMS_HEADER = re.compile(
    r"^\|\s*Question\s*\|\s*Keras 2\s*\|\s*Keras 3\.0 to 3\.15\s*\|"
    r"\s*Keras 3\.16 and later\s*\|$"
)


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def keras(tf):
    return tf.keras


@pytest.fixture(scope="module")
def keras_range(keras):
    found = trainable_training.keras_version_range(keras.__version__)
    if found is None:
        pytest.skip(f"The claims do not cover Keras {keras.__version__}.")
    return found


@pytest.fixture(scope="module")
def table():
    return trainable_training.probe()


def probe_in_subprocess(**env):
    """Run ``python -m trainable_training --json`` with ``env`` added; return its table."""
    result = subprocess.run(
        [sys.executable, "-m", "trainable_training", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def keras2_table():
    """The probe's table measured on Keras 2: tf-keras, with TF_USE_LEGACY_KERAS=1."""
    return probe_in_subprocess(TF_USE_LEGACY_KERAS="1")


def read_claims_table(text: str) -> dict:
    """Return ``{question: {range: answer}}`` from the claims table in ``text``.

    ``text`` is markdown, or a jupytext percent script whose markdown lines start
    with ``# ``. The table starts at the header
    ``| Question | Keras 3.0 to 3.15 | Keras 3.16 and later |``.
    """
    lines = [
        re.sub(r"^# ?", "", line).strip() if line.startswith("#") else line.strip()
        for line in text.splitlines()
    ]
    starts = [i for i, line in enumerate(lines) if CLAIMS_HEADER.match(line)]
    assert len(starts) == 1, f"expected one claims table, found {len(starts)}"
    claims = {}
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 4, f"claims table row with {len(cells)} cells: {line!r}"
        question, *answers = cells
        claims[question] = dict(zip(trainable_training.KERAS_RANGES, (a.lower() for a in answers)))
    return claims


def claims_in_utils() -> dict:
    return {question: dict(answers) for question, answers, _ in trainable_training.CLAIMS}


def fit_one_step(model, x, y):
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)


def moving_statistics(keras, layer):
    return [keras.ops.convert_to_numpy(v) for v in (layer.moving_mean, layer.moving_variance)]


def changed(before, after) -> bool:
    return not all(np.array_equal(a, b) for a, b in zip(before, after))


# --------------------------------------------------------------------------
# The probe, the claims and the prose agree
# --------------------------------------------------------------------------


def test_probe_covers_every_combination(table):
    """Does the probe measure BN and Dropout for every trainable x training x fit/predict?"""
    for layer in ("BatchNormalization", "Dropout"):
        combinations = {
            (r["trainable"], r["training"], r["phase"])
            for r in trainable_training.probe_rows(table, layer)
        }
        assert combinations == {
            (trainable, training, phase)
            for trainable in (True, False)
            for training in trainable_training.PROBE_TRAINING_VALUES
            for phase in trainable_training.PROBE_PHASES
        }
    cases = [r["case"] for r in trainable_training.probe_rows(table, "nesting")]
    assert cases == list(trainable_training.NESTING_CASES)
    assert len(table["rows"]) == 24 + len(cases)


def test_claims_hold_on_installed_keras(table, keras_range):
    """Does every answer in trainable_training.CLAIMS for this Keras match the live probe?"""
    assert trainable_training.check_claims(table, keras_range) == []


def test_claims_hold_on_keras_2(keras2_table):
    """Does every answer of the "Keras 2" column match the probe run on tf-keras 2.21?"""
    assert keras2_table["keras"].startswith("2."), keras2_table["keras"]
    assert trainable_training.keras_version_range(keras2_table["keras"]) == "2"
    assert trainable_training.check_claims(keras2_table, "2") == []


def test_keras_2_differs_where_the_notebook_says(keras2_table, table):
    """Are the answers that differ between Keras 2 and this Keras exactly the ones the claims say differ?"""
    here = trainable_training.keras_version_range(table["keras"])
    measured = {
        question
        for question, _, measure in trainable_training.CLAIMS
        if measure(keras2_table) != measure(table)
    }
    claimed = {
        question
        for question, answers, _ in trainable_training.CLAIMS
        if answers["2"] != answers[here]
    }
    assert measured == claimed
    assert trainable_training.LAYER_TRAINS_IN_FROZEN_MODEL in measured


def test_docs_show_the_table_of_keras_2(keras2_table):
    """Do the docs print the probe's table exactly as tf-keras 2.21 measures it?"""
    text = DOCS.read_text(encoding="utf-8")
    printed = trainable_training.format_table(keras2_table)
    assert printed in text, (
        "regenerate the Keras 2 table in the docs with "
        "`TF_USE_LEGACY_KERAS=1 python -m trainable_training`"
    )


def test_notebook_claims_table_is_utils_claims():
    """Does the notebook's claims table say exactly what trainable_training.CLAIMS says?"""
    assert read_claims_table(NOTEBOOK.read_text(encoding="utf-8")) == claims_in_utils()


def test_docs_claims_table_is_utils_claims():
    """Does docs/trainable-vs-training.md's claims table say exactly what trainable_training.CLAIMS says?"""
    assert read_claims_table(DOCS.read_text(encoding="utf-8")) == claims_in_utils()


@pytest.mark.parametrize("path", [NOTEBOOK, DOCS], ids=["notebook", "docs"])
def test_prose_matches_measurement(path, table, keras_range):
    """Does each answer in the prose, for this Keras, match the live probe?"""
    prose = read_claims_table(path.read_text(encoding="utf-8"))
    measured = {question: measure(table) for question, _, measure in trainable_training.CLAIMS}
    stated = {question: answers[keras_range] for question, answers in prose.items()}
    assert stated == measured


def test_edited_prose_is_caught(table, keras_range):
    """Does flipping one answer in the notebook's claims table make the check fail?"""
    text = NOTEBOOK.read_text(encoding="utf-8")
    question, answers, measure = trainable_training.CLAIMS[2]
    column = trainable_training.KERAS_RANGES.index(keras_range)
    row = (
        "| " + " | ".join([question] + [answers[r] for r in trainable_training.KERAS_RANGES]) + " |"
    )
    assert row in text, f"the notebook lacks the row {row!r}"
    flipped = [answers[r] for r in trainable_training.KERAS_RANGES]
    flipped[column] = "yes" if flipped[column] == "no" else "no"
    edited = text.replace(row, "| " + " | ".join([question] + flipped) + " |")
    prose = read_claims_table(edited)
    assert prose[question][keras_range] != measure(table)


def test_wrong_claim_is_reported(table, keras_range):
    """Does check_claims() report a claim the measurement contradicts?"""
    rows = [dict(row) for row in table["rows"]]
    for row in rows:
        if row["layer"] == "BatchNormalization" and not row["trainable"]:
            row["statistics"] = "batch"
    mismatches = trainable_training.check_claims({**table, "rows": rows}, keras_range)
    assert [question for question, _, _ in mismatches] == [trainable_training.CLAIMS[0][0]]


def test_docs_show_the_table_of_this_keras(table):
    """Do the docs print the probe's table exactly as the installed Keras measures it?

    Only checked when the docs were measured on the installed version.
    """
    text = DOCS.read_text(encoding="utf-8")
    printed = trainable_training.format_table(table)
    if f"Measured on Keras {table['keras']} " not in text:
        pytest.skip(f"docs/trainable-vs-training.md was not measured on Keras {table['keras']}")
    assert printed in text, "regenerate the table in the docs with `python -m trainable_training`"


def test_keras_version_ranges():
    """Are Keras versions sorted into the right column, dev versions included?"""
    assert trainable_training.keras_version_range("3.0.0") == "3.0 to 3.15"
    assert trainable_training.keras_version_range("3.15.1") == "3.0 to 3.15"
    assert trainable_training.keras_version_range("3.16.0.dev2026112403") == "3.16 and later"
    assert trainable_training.keras_version_range("3.20.0") == "3.16 and later"
    assert trainable_training.keras_version_range("4.0.0") == "3.16 and later"
    assert trainable_training.keras_version_range("2.21.0") == "2"
    assert trainable_training.keras_version_range("1.2.2") is None


# --------------------------------------------------------------------------
# Facts measured directly, without the probe
# --------------------------------------------------------------------------


def bn_model(keras, training):
    """A BN layer inside a base model called with ``training``, as in the assignment."""
    layer = keras.layers.BatchNormalization()
    base_inputs = keras.Input(shape=(3,))
    base_model = keras.Model(base_inputs, layer(base_inputs))
    inputs = keras.Input(shape=(3,))
    outputs = base_model(inputs, training=training)
    return keras.Model(inputs, outputs), base_model, layer


def data(rows=16, columns=3):
    x = np.random.default_rng(0).normal(5.0, 2.0, size=(rows, columns)).astype("float32")
    return x, np.zeros_like(x)


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_frozen_bn_keeps_moving_statistics(keras):
    """Does BN keep its moving statistics when trainable=False, even called with training=True?"""
    model, base_model, layer = bn_model(keras, training=True)
    base_model.trainable = False
    before = moving_statistics(keras, layer)
    fit_one_step(model, *data())
    assert not changed(before, moving_statistics(keras, layer))


def test_training_false_under_fit(keras, keras_range):
    """Does base_model(x, training=False) keep a trainable BN out of training mode in fit()?

    On Keras 3.0 to 3.15 fit() overrides it, so the moving statistics change; from
    3.16 on it is honoured, so they do not.
    """
    model, _, layer = bn_model(keras, training=False)
    before = moving_statistics(keras, layer)
    fit_one_step(model, *data())
    assert changed(before, moving_statistics(keras, layer)) == (keras_range == "3.0 to 3.15")


def test_literal_training_false_in_subclassed_layer(keras):
    """Does a layer whose call() passes training=False literally keep BN in inference mode?"""

    class FrozenBatchNorm(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.bn = keras.layers.BatchNormalization()

        def call(self, inputs):
            return self.bn(inputs, training=False)

    wrapper = FrozenBatchNorm()
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, wrapper(inputs))
    model(np.zeros((1, 3), "float32"))
    before = moving_statistics(keras, wrapper.bn)
    fit_one_step(model, *data())
    assert not changed(before, moving_statistics(keras, wrapper.bn))


@pytest.mark.parametrize("training", [None, True, False])
def test_dropout(keras, keras_range, training):
    """Does Dropout drop in fit() and not in predict(), whatever trainable is?

    With base_model(x, training=False), it still drops in fit() on Keras 3.0 to 3.15.
    """
    x = np.ones((16, 8), "float32")
    for trainable in (True, False):
        layer = keras.layers.Dropout(0.5, seed=0)
        base_inputs = keras.Input(shape=(8,))
        base_model = keras.Model(base_inputs, layer(base_inputs))
        inputs = keras.Input(shape=(8,))
        model = keras.Model(
            inputs,
            base_model(inputs) if training is None else base_model(inputs, training=training),
        )
        layer.trainable = trainable
        model.compile(optimizer="sgd", loss="mse")
        with pytest.warns(UserWarning, match="does not have any trainable weights"):
            loss = model.fit(x, x, batch_size=16, epochs=1, verbose=0).history["loss"][0]
        drops_in_fit = training is not False or keras_range == "3.0 to 3.15"
        assert (loss == 1.0) == drops_in_fit, f"trainable={trainable}: loss {loss}"
        assert (loss == 0.0) != drops_in_fit
        assert np.array_equal(model.predict(x, verbose=0), x)


def test_trainable_true_is_a_no_op_when_already_true(keras):
    """Does model.trainable = True leave a frozen inner layer frozen when it is already True?

    On the TensorFlow backend, Keras skips an assignment of the value an attribute
    already has (keras/src/backend/tensorflow/trackable.py), so the setter that
    would unfreeze every sublayer never runs.
    """
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(3)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden(inputs)))
    hidden.trainable = False
    model.trainable = True
    if keras.backend.backend() == "tensorflow":
        assert hidden.trainable is False
    else:
        assert hidden.trainable is True
    model.trainable = False
    model.trainable = True
    assert hidden.trainable is True


def test_augmentation_active_on_plain_call(keras):
    """Are RandomFlip and RandomRotation active on a plain call, and off in predict()?"""
    augmenter = keras.Sequential(
        [keras.layers.RandomFlip("horizontal", seed=1), keras.layers.RandomRotation(0.2, seed=2)]
    )
    x = np.random.default_rng(0).uniform(0, 255, size=(4, 16, 16, 3)).astype("float32")
    inputs = keras.Input(shape=(16, 16, 3))
    model = keras.Model(inputs, augmenter(inputs))
    assert not np.array_equal(keras.ops.convert_to_numpy(augmenter(x)), x)
    assert not np.array_equal(keras.ops.convert_to_numpy(model(x)), x)
    assert np.array_equal(keras.ops.convert_to_numpy(model(x, training=False)), x)
    assert np.array_equal(model.predict(x, verbose=0), x)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mobilenet_fine_tuning_bn(keras, keras_range):
    """When fine-tuning MobileNetV2 from layer 120, which BN layers change their moving statistics?

    With base_model(x, training=False) and BN left trainable, all 12 BN layers from
    layer 120 on change on Keras 3.0 to 3.15 and none from 3.16 on. With BN set
    non-trainable, as the solution of Exercise 3 does, none change on any version.
    MobileNetV2's BN momentum is 0.999, so the change is tiny: compare exactly.
    """
    base_model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    inputs = keras.Input(shape=(32, 32, 3))
    x = base_model(inputs, training=False)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    batch_norms = [
        layer
        for layer in base_model.layers[utils.FINE_TUNE_AT :]
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(batch_norms) == 12
    assert {layer.momentum for layer in batch_norms} == {0.999}

    # Freeze everything before layer 120; trainable = True again changes nothing.
    base_model.trainable = True
    for layer in base_model.layers[: utils.FINE_TUNE_AT]:
        layer.trainable = False
    base_model.trainable = True
    if keras.backend.backend() == "tensorflow":
        assert sum(layer.trainable for layer in base_model.layers) == 34

    images = np.random.default_rng(0).uniform(-1, 1, size=(8, 32, 32, 3)).astype("float32")
    labels = np.zeros((8, 1), "float32")

    def changed_batch_norms():
        before = [moving_statistics(keras, layer) for layer in batch_norms]
        fit_one_step(model, images, labels)
        after = [moving_statistics(keras, layer) for layer in batch_norms]
        return sum(changed(b, a) for b, a in zip(before, after))

    expected = 12 if keras_range == "3.0 to 3.15" else 0
    assert changed_batch_norms() == expected
    for layer in batch_norms:
        layer.trainable = False
    assert changed_batch_norms() == 0


# --------------------------------------------------------------------------
# Layers inside a model: the facts behind Exercise 3's step 1, measured directly
# --------------------------------------------------------------------------


def test_layer_trains_inside_frozen_model(keras, keras_range):
    """Does a Dense with trainable=True inside a Sequential with trainable=False train in fit()?

    On Keras 3 it does (the outer model lists its weights in trainable_weights);
    on Keras 2 it does not (test_claims_hold_on_keras_2 measures that).
    """
    inner = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(4)])
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inner(inputs)))
    inner.trainable = False
    dense = inner.layers[1]
    dense.trainable = True
    listed = any(weight is dense.kernel for weight in model.trainable_weights)
    before = np.array(dense.kernel.numpy())
    fit_one_step(model, *data(columns=3))
    trains = not np.array_equal(before, dense.kernel.numpy())
    expected = trainable_training.answer(trainable_training.LAYER_TRAINS_IN_FROZEN_MODEL)
    assert (listed and trains) == (expected == "yes")
    assert inner.trainable_weights == []  # the frozen model itself lists none of them


# --------------------------------------------------------------------------
# The prose says only what the claims say
# --------------------------------------------------------------------------

LEARNER_TEXTS = [
    ROOT / "trainable_training.py",
    ROOT / "public_tests.py",
    ROOT / "test_utils.py",
    ROOT / "utils.py",
    NOTEBOOK,
    DOCS,
    ROOT / "LEARNER_README.md",
]
# Statements about Keras that the probe measured false (issue 17), in any learner file.
FALSE_STATEMENTS = [
    "none of its layers can train",
    "or none of its layers trains",
    "keeps its BatchNormalization layers in inference mode",
    "version of this notebook",
]


@pytest.mark.parametrize("path", LEARNER_TEXTS, ids=lambda p: p.name)
def test_no_statement_the_probe_contradicts(path):
    """Does no learner file say what the probe measured false, or tell an unsourced history?"""
    text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))
    found = [phrase for phrase in FALSE_STATEMENTS if phrase in text]
    assert not found, found


def remember_points() -> list[str]:
    """The bullet points of the notebook's last section, "What you should remember"."""
    text = NOTEBOOK.read_text(encoding="utf-8")
    headings = re.findall(r"^# ## (.+)$", text, re.M)
    assert headings[-1] == "What you should remember", headings
    section = text.split("# ## What you should remember", 1)[1]
    points = re.split(r"^# - ", section, flags=re.M)[1:]
    return [re.sub(r"\s*\n# ?\s*", " ", point).strip() for point in points]


# Each point of "What you should remember" that says what Keras does, with the
# claims it rests on and the answer it needs on every Keras.
REMEMBER_CLAIMS = {
    "`trainable = False` freezes": [
        ("Does `trainable = False` put BN in inference mode during `fit()`?", "yes"),
        ("Does `trainable = False` freeze BN's moving statistics, gamma and beta?", "yes"),
    ],
    "make the base model trainable": [
        # Making the base model trainable first works whatever this answer is ...
        ("Does a change of `trainable` after `fit()` count without `compile()` again?", "no"),
    ],
    "`training=False` is a different switch": [],
}


def test_remember_section_is_true_on_every_keras():
    """Does the notebook end with 3 to 5 points to remember, each true on every Keras of the claims?"""
    points = remember_points()
    assert 3 <= len(points) <= 5, points
    claims = {question: answers for question, answers, _ in trainable_training.CLAIMS}
    for start, needed in REMEMBER_CLAIMS.items():
        matching = [point for point in points if start.lower() in point.lower()]
        assert len(matching) == 1, (start, points)
        for question, answer in needed:
            assert set(claims[question].values()) == {answer}, (question, claims[question])
    # The point that says it depends on the version: it does, in the claims.
    answers = claims[trainable_training.TRAINING_FALSE_KEEPS_BN]
    assert len(set(answers.values())) == 2, answers
    assert any("depends on your Keras version" in point for point in points), points


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bn_experiment_works_with_any_metric_name(tf, keras):
    """Does the optional BN experiment run with a fine_tune() whose accuracy metric has no name="accuracy"?"""
    import catalogue

    fine_tune = catalogue.load("fine_tune", [catalogue.METRIC_NAME])

    def build_model():
        base = keras.applications.MobileNetV2(
            input_shape=(32, 32, 3), include_top=False, weights=None
        )
        base.trainable = False
        inputs = keras.Input(shape=(32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
        return keras.Model(inputs, keras.layers.Dense(1)(x))

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    labels = (np.arange(8) % 2).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    results = trainable_training.bn_experiment(
        build_model, fine_tune, dataset, dataset, head_epochs=1, fine_tune_epochs=1
    )
    for label, result in results.items():
        assert len(result["history"]["val_accuracy"]) == 2, (label, result["history"].keys())
    import matplotlib.pyplot as plt

    plt.close(trainable_training.plot_bn_experiment(results))
