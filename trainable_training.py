"""What `trainable` and `training` do, measured on the installed Keras.

    python -m trainable_training          prints the measured table and the claims
    python -m trainable_training --json   prints the measured table as JSON

It measures Keras 2 too: run it with ``TF_USE_LEGACY_KERAS=1`` and the
``tf-keras`` package installed, and ``tf.keras`` is Keras 2.

`probe()` builds tiny models and measures, on the Keras that is installed, what
`layer.trainable` and the call-time `training` argument do to BatchNormalization
and Dropout inside `fit()` and `predict()`. `CLAIMS` holds the answers that the
notebook, docs/trainable-vs-training.md and the public tests' messages give,
per Keras version range; the project's tests check them against the live probe
(on Keras 3 and on Keras 2) and against the notebook's text. `bn_experiment()` is the notebook's optional experiment: fine-tuning with
BatchNormalization frozen or not.
"""

from __future__ import annotations

import json
import re
import sys
import warnings

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

import utils

PROBE_TRAINING_VALUES = (None, True, False)
PROBE_PHASES = ("fit", "predict")
KERAS_RANGES = ("2", "3.0 to 3.15", "3.16 and later")


def keras_version():
    """Return the version of the Keras that ``tf.keras`` is here ("3.15.1", "2.21.0")."""
    version = getattr(tf.keras, "__version__", None)
    if version is None:  # tf-keras (Keras 2) keeps its version in its own package
        import tf_keras

        version = tf_keras.__version__
    return version


def keras_version_range(version=None):
    """Return the column of `CLAIMS` for a Keras version: "2", "3.0 to 3.15" or "3.16 and later".

    Returns None for versions the claims do not cover (before 2.0, or not a version).
    The default is the Keras that ``tf.keras`` is on this machine.
    """
    if version is None:
        version = keras_version()
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if not match:
        return None
    major_minor = (int(match.group(1)), int(match.group(2)))
    if major_minor < (2, 0):
        return None
    if major_minor < (3, 0):
        return KERAS_RANGES[0]
    return KERAS_RANGES[1] if major_minor < (3, 16) else KERAS_RANGES[2]


def _numpy(variable):
    """A copy of a variable's value, on Keras 2 and 3."""
    return np.array(variable.numpy(), copy=True)


def _probe_model(keras, layer, shape, training):
    """Wrap ``layer`` in a one-layer base model, called as ``base_model(x, training=...)``."""
    base_inputs = keras.Input(shape=shape)
    base_model = keras.Model(base_inputs, layer(base_inputs), name="base_model")
    inputs = keras.Input(shape=shape)
    if training is None:
        outputs = base_model(inputs)
    else:
        outputs = base_model(inputs, training=training)
    return keras.Model(inputs, outputs)


def _probe_batch_norm(keras, trainable, training):
    """Return the two rows (fit, predict) for one BatchNormalization setting."""
    # Data far from the initial moving statistics (mean 0, variance 1), so that
    # normalising with the batch statistics or with the moving ones gives very
    # different outputs.
    x = np.random.default_rng(0).normal(5.0, 2.0, size=(16, 3)).astype("float32")
    y = np.zeros_like(x)
    layer = keras.layers.BatchNormalization(name="bn")
    model = _probe_model(keras, layer, (3,), training)
    layer.trainable = trainable
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")

    def state():
        return [
            _numpy(v) for v in (layer.moving_mean, layer.moving_variance, layer.gamma, layer.beta)
        ]

    def candidates(weights):
        moving_mean, moving_variance, gamma, beta = weights
        eps = layer.epsilon
        by_batch = (x - x.mean(0)) / np.sqrt(x.var(0) + eps) * gamma + beta
        by_moving = (x - moving_mean) / np.sqrt(moving_variance + eps) * gamma + beta
        return by_batch, by_moving

    def row(phase, before, after, by_batch, by_moving, seen):
        # `seen` is what the model produced: its output (predict) or its loss (fit).
        if phase == "predict":
            batch_error = np.abs(seen - by_batch).max()
            moving_error = np.abs(seen - by_moving).max()
        else:
            batch_error = abs(seen - np.mean((by_batch - y) ** 2))
            moving_error = abs(seen - np.mean((by_moving - y) ** 2))
        return {
            "layer": "BatchNormalization",
            "trainable": trainable,
            "training": training,
            "phase": phase,
            "statistics": "batch" if batch_error < moving_error else "moving",
            # np.array_equal, not allclose: with momentum 0.99 (0.999 in
            # MobileNetV2) one step changes the moving statistics very little.
            "moving_updated": not all(map(np.array_equal, before[:2], after[:2])),
            "gamma_beta_updated": not all(map(np.array_equal, before[2:], after[2:])),
        }

    rows = []
    before = state()
    output = model.predict(x, batch_size=len(x), verbose=0)
    rows.append(row("predict", before, state(), *candidates(before), output))
    before = state()
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    rows.append(row("fit", before, state(), *candidates(before), history.history["loss"][0]))
    return rows[::-1]


def _probe_dropout(keras, trainable, training):
    """Return the two rows (fit, predict) for one Dropout setting."""
    # All ones in, all ones expected out. Dropout at rate 0.5 turns each value
    # into 0 or 2, so the loss is exactly 1 when it drops and 0 when it does not.
    x = np.ones((16, 8), dtype="float32")
    layer = keras.layers.Dropout(0.5, seed=utils.SEED, name="dropout")
    model = _probe_model(keras, layer, (8,), training)
    layer.trainable = trainable
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    loss = model.fit(x, x, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history["loss"][0]
    output = model.predict(x, batch_size=len(x), verbose=0)
    return [
        {
            "layer": "Dropout",
            "trainable": trainable,
            "training": training,
            "phase": phase,
            "drops": bool(dropped),
        }
        for phase, dropped in (("fit", loss > 0.5), ("predict", not np.all(output == 1.0)))
    ]


# The questions the nesting probe answers, as format_table() prints them.
NESTING_CASES = {
    "listed": "Dense(trainable=True) inside Sequential(trainable=False): "
    "in the outer model's trainable_weights",
    "trains": "Dense(trainable=True) inside Sequential(trainable=False): changed by fit()",
    "unfreezes": "Sequential.trainable = True, when already True: unfreezes a layer frozen alone",
    "no_recompile": "a layer unfrozen after fit(): changed by the next fit(), without compile()",
}


def _probe_nesting(keras):
    """Return the rows of what ``trainable`` does to layers inside a model.

    As in Exercise 3, where the layers of MobileNetV2 sit inside the model and
    each gets its own flag: does a trainable layer train inside a frozen model?
    Does ``model.trainable = True`` unfreeze layers frozen one by one? Does a
    change of ``trainable`` after ``fit()`` count without ``compile()`` again?
    """
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    y = np.ones((16, 1), dtype="float32")

    def build():
        inner = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(4)], name="inner")
        inputs = keras.Input(shape=(3,))
        model = keras.Model(inputs, keras.layers.Dense(1)(inner(inputs)))
        return model, inner

    def fit(model, compile_first=True):
        if compile_first:
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
        model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)

    results = {}
    # A frozen model, one of its layers unfrozen alone.
    model, inner = build()
    inner.trainable = False
    dense = inner.layers[1]
    dense.trainable = True
    results["listed"] = any(weight is dense.kernel for weight in model.trainable_weights)
    before = _numpy(dense.kernel)
    fit(model)
    results["trains"] = not np.array_equal(before, _numpy(dense.kernel))
    # model.trainable = True again, after freezing one layer alone.
    model, inner = build()
    inner.layers[0].trainable = False
    inner.trainable = True
    results["unfreezes"] = bool(inner.layers[0].trainable)
    # A layer unfrozen after fit(), then fit() again without compile().
    model, inner = build()
    dense = inner.layers[1]
    dense.trainable = False
    fit(model)
    dense.trainable = True
    before = _numpy(dense.kernel)
    fit(model, compile_first=False)
    results["no_recompile"] = not np.array_equal(before, _numpy(dense.kernel))
    return [
        {"layer": "nesting", "case": case, "result": bool(results[case])} for case in NESTING_CASES
    ]


def probe():
    """Measure what `trainable` and `training` do on the installed Keras.

    For BatchNormalization and for Dropout, and for every combination of
    ``layer.trainable`` in {True, False}, the ``training`` value the layer's
    base model is called with in {None, True, False} (None: not passed), and
    ``fit()`` or ``predict()``, it builds a tiny model as in the assignment::

        x = base_model(inputs, training=training)

    runs one step and records, for BatchNormalization, which statistics
    normalise the data (``"batch"`` or ``"moving"``), whether the moving
    statistics changed and whether gamma or beta changed, and for Dropout
    whether it drops values. Then it measures what ``trainable`` does to layers
    inside a model (see `_probe_nesting()`). Returns ``{"keras": version,
    "backend": name, "rows": [...]}``. Takes a few seconds on a CPU.
    """
    keras = tf.keras
    rows = []
    logger = tf.get_logger()
    level = logger.level
    # Twelve tiny models trace twelve functions: silence TensorFlow's retracing advice.
    logger.setLevel("ERROR")
    try:
        with warnings.catch_warnings():
            # A BN layer with trainable=False leaves the model no trainable weight.
            warnings.filterwarnings("ignore", message=".*does not have any trainable weights.*")
            for probe in (_probe_batch_norm, _probe_dropout):
                for trainable in (True, False):
                    for training in PROBE_TRAINING_VALUES:
                        rows.extend(probe(keras, trainable, training))
            rows.extend(_probe_nesting(keras))
    finally:
        logger.setLevel(level)
    return {"keras": keras_version(), "backend": keras.backend.backend(), "rows": rows}


def probe_rows(table, layer, **where):
    """Return the rows of ``table`` for ``layer`` whose fields equal ``where``."""
    return [
        row
        for row in table["rows"]
        if row["layer"] == layer and all(row[key] == value for key, value in where.items())
    ]


def format_table(table) -> str:
    """Render the table of `probe()` as plain text."""

    def yes_no(value):
        return "yes" if value else "no"

    lines = [
        f"Measured on Keras {table['keras']} ({table['backend']} backend), "
        f"with x = base_model(inputs, training=...)",
        "",
        "BatchNormalization",
        f"{'trainable':<10} {'training':<9} {'during':<10} {'normalises with':<17} "
        f"{'moving stats change':<20} gamma/beta change",
    ]
    for row in probe_rows(table, "BatchNormalization"):
        lines.append(
            f"{str(row['trainable']):<10} {str(row['training']):<9} {row['phase'] + '()':<10} "
            f"{row['statistics'] + ' stats':<17} {yes_no(row['moving_updated']):<20} "
            f"{yes_no(row['gamma_beta_updated'])}"
        )
    lines += ["", "Dropout", f"{'trainable':<10} {'training':<9} {'during':<10} drops values"]
    for row in probe_rows(table, "Dropout"):
        lines.append(
            f"{str(row['trainable']):<10} {str(row['training']):<9} {row['phase'] + '()':<10} "
            f"{yes_no(row['drops'])}"
        )
    lines += ["", "Layers inside a model"]
    for row in probe_rows(table, "nesting"):
        lines.append(f"{NESTING_CASES[row['case']]}: {yes_no(row['result'])}")
    return "\n".join(lines)


def _answer(condition: bool) -> str:
    return "yes" if condition else "no"


def _nesting(table, case):
    return all(row["result"] for row in probe_rows(table, "nesting", case=case))


# The questions that the notebook's text and the public tests' messages answer.
TRAINING_FALSE_KEEPS_BN = "Does `training=False` keep BN in inference mode during `fit()`?"
LAYER_TRAINS_IN_FROZEN_MODEL = (
    "Does a layer with `trainable = True` train inside a model with `trainable = False`?"
)
TRAINABLE_TRUE_AGAIN_UNFREEZES = (
    "Does `model.trainable = True` unfreeze layers frozen one by one, when it is already `True`?"
)
CHANGE_COUNTS_WITHOUT_COMPILE = (
    "Does a change of `trainable` after `fit()` count without `compile()` again?"
)

# Each claim: the question as the notebook and the docs ask it, the answer for
# each Keras range, and how to read the answer from the probe's table. The "2"
# answers were measured on tf-keras 2.21.0 (TF_USE_LEGACY_KERAS=1), the
# "3.0 to 3.15" answers on 3.15.1, the "3.16 and later" answers on Keras master
# (3.16.0 at commit 3422977, after keras-team/keras PR #23364). The tests compare
# the columns "2" and the installed Keras's with the live probe, and the
# notebook's claims table with this tuple.
CLAIMS = (
    (
        "Does `trainable = False` put BN in inference mode during `fit()`?",
        {"2": "yes", "3.0 to 3.15": "yes", "3.16 and later": "yes"},
        lambda t: _answer(
            all(
                r["statistics"] == "moving"
                for r in probe_rows(t, "BatchNormalization", trainable=False)
            )
        ),
    ),
    (
        "Does `trainable = False` freeze BN's moving statistics, gamma and beta?",
        {"2": "yes", "3.0 to 3.15": "yes", "3.16 and later": "yes"},
        lambda t: _answer(
            not any(
                r["moving_updated"] or r["gamma_beta_updated"]
                for r in probe_rows(t, "BatchNormalization", trainable=False)
            )
        ),
    ),
    (
        TRAINING_FALSE_KEEPS_BN,
        {"2": "yes", "3.0 to 3.15": "no", "3.16 and later": "yes"},
        lambda t: _answer(
            all(
                r["statistics"] == "moving" and not r["moving_updated"]
                for r in probe_rows(
                    t, "BatchNormalization", trainable=True, training=False, phase="fit"
                )
            )
        ),
    ),
    (
        "Does `training=False` stop BN's gamma and beta from training?",
        {"2": "no", "3.0 to 3.15": "no", "3.16 and later": "no"},
        lambda t: _answer(
            not any(
                r["gamma_beta_updated"]
                for r in probe_rows(
                    t, "BatchNormalization", trainable=True, training=False, phase="fit"
                )
            )
        ),
    ),
    (
        "Does `trainable` change what Dropout does?",
        {"2": "no", "3.0 to 3.15": "no", "3.16 and later": "no"},
        lambda t: _answer(
            any(
                [
                    r["drops"]
                    for r in probe_rows(
                        t, "Dropout", trainable=True, training=training, phase=phase
                    )
                ]
                != [
                    r["drops"]
                    for r in probe_rows(
                        t, "Dropout", trainable=False, training=training, phase=phase
                    )
                ]
                for training in PROBE_TRAINING_VALUES
                for phase in PROBE_PHASES
            )
        ),
    ),
    (
        "Does `training=False` turn Dropout off during `fit()`?",
        {"2": "yes", "3.0 to 3.15": "no", "3.16 and later": "yes"},
        lambda t: _answer(
            not any(r["drops"] for r in probe_rows(t, "Dropout", training=False, phase="fit"))
        ),
    ),
    (
        LAYER_TRAINS_IN_FROZEN_MODEL,
        {"2": "no", "3.0 to 3.15": "yes", "3.16 and later": "yes"},
        lambda t: _answer(_nesting(t, "listed") and _nesting(t, "trains")),
    ),
    (
        TRAINABLE_TRUE_AGAIN_UNFREEZES,
        {"2": "yes", "3.0 to 3.15": "no", "3.16 and later": "no"},
        lambda t: _answer(_nesting(t, "unfreezes")),
    ),
    (
        CHANGE_COUNTS_WITHOUT_COMPILE,
        {"2": "no", "3.0 to 3.15": "no", "3.16 and later": "no"},
        lambda t: _answer(_nesting(t, "no_recompile")),
    ),
)


def answer(question, version=None):
    """Return the answer of `CLAIMS` to ``question`` ("yes" or "no") for a Keras version.

    The default is the installed Keras. Returns None for a Keras the claims do
    not cover.
    """
    keras_range = keras_version_range(version)
    for claimed, answers, _ in CLAIMS:
        if claimed == question:
            return answers.get(keras_range)
    raise KeyError(question)


def column_title(keras_range):
    """The title of a column of the claims table: "Keras 2", "Keras 3.0 to 3.15", ..."""
    return f"Keras {keras_range}"


def check_claims(table, keras_range=None):
    """Compare `CLAIMS` for the installed Keras with ``table``; return the mismatches.

    Returns ``[(question, claimed, measured), ...]`` for every claim the
    measurement contradicts, so an empty list means the text is true here.
    """
    keras_range = keras_range or keras_version_range(table["keras"])
    if keras_range is None:
        return [
            (question, "no claim for this Keras", measure(table)) for question, _, measure in CLAIMS
        ]
    return [
        (question, answers[keras_range], measure(table))
        for question, answers, measure in CLAIMS
        if answers[keras_range] != measure(table)
    ]


def format_claims(table) -> str:
    """Render each claim with its answer measured on this Keras, and flag disagreements."""
    keras_range = keras_version_range(table["keras"])
    lines = [
        f"Your Keras is {table['keras']}: the column to read is {column_title(keras_range)!r}."
        if keras_range
        else f"Your Keras is {table['keras']}: the claims do not cover it; trust the table."
    ]
    wrong = {question for question, _, _ in check_claims(table)}
    for question, answers, measure in CLAIMS:
        measured = measure(table)
        verdict = (
            ""
            if not keras_range
            else (
                "  (as the text says)"
                if question not in wrong
                else f"  (the text says {answers[keras_range]!r}: the text is out of date)"
            )
        )
        lines.append(f"- {question} {measured}{verdict}")
    return "\n".join(lines)


def bn_experiment(
    build_model,
    fine_tune,
    train_dataset,
    validation_dataset,
    head_epochs=2,
    fine_tune_epochs=3,
    fine_tune_at=utils.FINE_TUNE_AT,
    base_learning_rate=utils.BASE_LEARNING_RATE,
    watched_layer="Conv_1_bn",
):
    """Fine-tune two copies of one model, with BN frozen and with BN trainable.

    ``build_model()`` returns a fresh, frozen alpaca model. Its classifier trains
    for ``head_epochs``; a copy gets the same weights. Then the first model is
    fine-tuned with ``fine_tune()`` (BN frozen) and the copy with every layer from
    ``fine_tune_at`` on trainable, BN included. Returns, for ``"BN frozen"`` and
    ``"BN trainable"``, the fine-tuning history and the mean moving variance of
    ``watched_layer`` after each batch. About 90 seconds on a laptop CPU.
    """

    def compile_model(model, learning_rate):
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
        )

    frozen = build_model()
    compile_model(frozen, base_learning_rate)
    head = frozen.fit(
        train_dataset, validation_data=validation_dataset, epochs=head_epochs, verbose=0
    )
    trainable = build_model()
    trainable.set_weights(frozen.get_weights())

    frozen = fine_tune(frozen, fine_tune_at, base_learning_rate)
    base_model = utils.get_base_model(trainable)
    # As in Exercise 3: the base model trainable first, then each layer's flag
    # (LAYER_TRAINS_IN_FROZEN_MODEL in CLAIMS says why).
    base_model.trainable = True
    for index, layer in enumerate(base_model.layers):
        layer.trainable = index >= fine_tune_at
    compile_model(trainable, base_learning_rate / 10)

    results = {}
    for label, model in (("BN frozen", frozen), ("BN trainable", trainable)):
        layer = utils.get_base_model(model).get_layer(watched_layer)
        variances = [float(np.mean(layer.moving_variance.numpy()))]
        record = tf.keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs, layer=layer, variances=variances: (
                variances.append(float(np.mean(layer.moving_variance.numpy())))
            )
        )
        history = model.fit(
            train_dataset,
            validation_data=validation_dataset,
            epochs=head_epochs + fine_tune_epochs,
            initial_epoch=head_epochs,
            callbacks=[record],
            verbose=0,
        )
        # Start the curves at the last epoch of the classifier's training. Your
        # fine_tune() may name its accuracy metric as it likes: read it as "accuracy".
        fine = utils.history_curves(history)
        start = utils.history_curves(head)
        results[label] = {
            "history": {key: start[key][-1:] + values for key, values in fine.items()},
            "moving_variance": variances,
            "first_epoch": head_epochs,
        }
    return results


def plot_bn_experiment(results, watched_layer="Conv_1_bn"):
    """Plot validation accuracy, validation loss and BN moving variance for `bn_experiment()`."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for label, result in results.items():
        history = result["history"]
        first = result["first_epoch"]
        epochs_run = list(range(first, first + len(history["val_accuracy"])))
        axes[0].plot(epochs_run, history["val_accuracy"], marker="o", label=label)
        axes[1].plot(epochs_run, history["val_loss"], marker="o", label=label)
        variances = np.asarray(result["moving_variance"])
        axes[2].plot(100 * (variances / variances[0] - 1), label=label)
        axes[0].set_xticks(epochs_run)
        axes[1].set_xticks(epochs_run)
    axes[0].set(
        title="Validation accuracy",
        xlabel="Epoch (fine-tuning starts after the first)",
        ylim=(0, 1),
    )
    axes[1].set(title="Validation loss", xlabel="Epoch (fine-tuning starts after the first)")
    axes[2].set(title=f"Moving variance of {watched_layer}: change (%)", xlabel="Fine-tuning batch")
    for axis in axes:
        axis.legend(loc="best")
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    _table = probe()
    if "--json" in sys.argv[1:]:
        print(json.dumps(_table))
    else:
        print(format_table(_table))
        print()
        print(format_claims(_table))
