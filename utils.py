"""Helpers for the "Transfer learning with MobileNetV2" assignment.

This module is shared by the notebook, the public tests and the project's own
tests. It finds the dataset and the ImageNet weights, loads the data, draws the
figures the notebook shows, and measures how `trainable` and `training` behave
on the installed Keras.

Where things come from (first match wins):

* dataset: ``$ALPACA_DATASET``, then ``dataset/`` beside this file.
* weights: ``$ALPACA_WEIGHTS_DIR``, then ``imagenet_base_model/`` beside this
  file, then Keras's own download (``weights="imagenet"``), which needs
  internet access.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent

IMG_SIZE = (160, 160)
BATCH_SIZE = 32
SEED = 42
VALIDATION_SPLIT = 0.2
CLASS_NAMES = ("alpaca", "not alpaca")
BASE_LEARNING_RATE = 0.001
FINE_TUNE_AT = 120

DATASET_ENV = "ALPACA_DATASET"
WEIGHTS_ENV = "ALPACA_WEIGHTS_DIR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# Accepted file names, most specific first: the names in the course's shared
# folder, then the official Keras names for 160x160 inputs.
WEIGHT_FILES = {
    False: (
        "mobilenet_v2_1.0_224_no_top.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5",
    ),
    True: (
        "mobilenet_v2_1.0_224_with_top.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160.h5",
    ),
}
CLASS_INDEX_FILE = "imagenet_class_index.json"
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
KERAS_CLASS_INDEX_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
)


class DatasetError(ValueError):
    """The dataset folder is missing, empty or holds files that are not images."""


class WeightsError(FileNotFoundError):
    """The MobileNetV2 ImageNet weights (or the class index) cannot be found."""


# --------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------


def dataset_dir(directory=None) -> pathlib.Path:
    """Return the dataset folder: the argument, ``$ALPACA_DATASET`` or ``dataset/``."""
    if directory is None:
        directory = os.environ.get(DATASET_ENV) or HERE / "dataset"
    return pathlib.Path(directory).expanduser()


def weights_dir() -> pathlib.Path:
    """Return the folder searched for weights: ``$ALPACA_WEIGHTS_DIR`` or ``imagenet_base_model/``."""
    return pathlib.Path(os.environ.get(WEIGHTS_ENV) or HERE / "imagenet_base_model").expanduser()


def _where_to_put_weights(include_top: bool) -> str:
    names = " or ".join(repr(n) for n in WEIGHT_FILES[include_top])
    return (
        f"Put {names} in {HERE / 'imagenet_base_model'} or in the folder named by "
        f"${WEIGHTS_ENV}, or run on a machine with internet access so that Keras can "
        f"download them (weights='imagenet')."
    )


def mobilenet_weights(include_top: bool = False) -> str:
    """Return the path of the MobileNetV2 ImageNet weights file.

    Pass the result as ``weights=`` to ``tf.keras.applications.MobileNetV2``.
    Raises `WeightsError`, saying where to put the file, when none is found.
    """
    env = os.environ.get(WEIGHTS_ENV)
    folder = weights_dir()
    for name in WEIGHT_FILES[include_top]:
        if (folder / name).is_file():
            return str(folder / name)
    if env:
        raise WeightsError(
            f"${WEIGHTS_ENV} is set to {env!r}, but that folder has none of "
            f"{', '.join(WEIGHT_FILES[include_top])}. {_where_to_put_weights(include_top)}"
        )
    return _download(WEIGHT_FILES[include_top][1], KERAS_WEIGHTS_URL, include_top)


def _download(name: str, base_url: str, include_top: bool) -> str:
    """Fetch a file into Keras's cache (``~/.keras/models``) as Keras itself does."""
    import keras

    try:
        return keras.utils.get_file(
            name, base_url + name if base_url.endswith("/") else base_url, cache_subdir="models"
        )
    except Exception as error:  # no network, proxy, HTTP error ...
        raise WeightsError(
            f"Could not find or download {name!r} ({type(error).__name__}: {error}). "
            f"{_where_to_put_weights(include_top)}"
        ) from None


def imagenet_class_index() -> dict:
    """Return ImageNet's ``{"355": ["n02437616", "llama"], ...}`` class index."""
    path = weights_dir() / CLASS_INDEX_FILE
    if not path.is_file():
        if os.environ.get(WEIGHTS_ENV):
            raise WeightsError(
                f"${WEIGHTS_ENV} is set, but {path} does not exist. Put "
                f"{CLASS_INDEX_FILE!r} beside the weights files."
            )
        path = _download(CLASS_INDEX_FILE, KERAS_CLASS_INDEX_URL, include_top=True)
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def decode_predictions(predictions, top: int = 3) -> list:
    """Turn ImageNet probabilities into ``[(class_name, probability), ...]`` per image."""
    import numpy as np

    index = imagenet_class_index()
    decoded = []
    for row in np.asarray(predictions):
        best = np.argsort(row)[::-1][:top]
        decoded.append([(index[str(i)][1], float(row[i])) for i in best])
    return decoded


def get_base_model(model):
    """Return the MobileNetV2 base model nested inside ``model``."""
    for layer in model.layers:
        if layer.name.startswith("mobilenetv2"):
            return layer
    names = ", ".join(layer.name for layer in model.layers)
    raise ValueError(
        f"No MobileNetV2 base model inside this model (its layers are: {names}). "
        f"Build the model with alpaca_model() first."
    )


# --------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------


def check_dataset(directory=None) -> dict:
    """Check the dataset folder and return ``{class_name: [image paths]}``.

    Raises `DatasetError`, naming every problem, when the folder does not exist,
    has no class folders, has an empty class folder, or holds a file that is
    not a readable image (empty, truncated or corrupt). Bad files are reported,
    not skipped: a silent skip would change the training set without saying so.
    """
    from PIL import Image

    root = dataset_dir(directory)
    hint = (
        f"Set ${DATASET_ENV} to the folder that holds 'alpaca/' and 'not alpaca/', "
        f"or copy those two folders into {HERE / 'dataset'}."
    )
    if not root.is_dir():
        raise DatasetError(f"Dataset folder {str(root)!r} does not exist. {hint}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        found = ", ".join(repr(p.name) for p in classes) or "none"
        raise DatasetError(
            f"Dataset folder {str(root)!r} must hold one folder per class "
            f"({', '.join(repr(c) for c in CLASS_NAMES)}); found {found}. {hint}"
        )
    files, problems = {}, []
    for folder in classes:
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            problems.append(f"class folder {str(folder)!r} has no images")
        for path in images:
            try:
                if path.stat().st_size == 0:
                    raise OSError("the file is empty")
                with Image.open(path) as image:
                    image.draft("RGB", IMG_SIZE)  # Decode JPEGs at a reduced scale: faster.
                    image.load()
            except Exception as error:
                problems.append(f"{str(path)!r} is not a readable image ({error})")
        files[folder.name] = images
    if problems:
        listed = "\n  - ".join(problems)
        raise DatasetError(
            f"The dataset in {str(root)!r} has {len(problems)} problem(s):\n  - {listed}\n"
            f"Remove or replace these files, then run the cell again."
        )
    return files


def load_datasets(directory=None, image_size=IMG_SIZE, batch_size=BATCH_SIZE):
    """Return ``(train_dataset, validation_dataset)``, checked, cached and prefetched.

    The split is Keras's ``validation_split=0.2`` with ``seed=42``: 262 training and
    65 validation images for the course data. Each dataset keeps ``class_names``.
    The decoded images are cached in memory after the first pass, so the JPEGs are
    not decoded again on every epoch. The training images are shuffled again on
    every epoch, after the cache, so that the batches differ from epoch to epoch.

    While nbgrader autogrades (see `autograding()`), only the first
    ``AUTOGRADE_BATCHES`` batches of each part are read: grading checks the
    code, not how well the model learns, and must take seconds, not minutes.
    """
    import warnings

    import tensorflow as tf

    # The training dataset shuffles itself; fit() would warn that its shuffle=True is ignored.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed, but will be ignored")
    root = dataset_dir(directory)
    check_dataset(root)
    splits = []
    for subset in ("training", "validation"):
        dataset = tf.keras.utils.image_dataset_from_directory(
            str(root),
            shuffle=True,
            batch_size=batch_size,
            image_size=image_size,
            validation_split=VALIDATION_SPLIT,
            subset=subset,
            seed=SEED,
            verbose=False,
        )
        class_names = dataset.class_names
        count = len(dataset.file_paths)
        if autograding():
            dataset = dataset.take(AUTOGRADE_BATCHES)
            count = min(count, AUTOGRADE_BATCHES * batch_size)
        if subset == "training":
            dataset = (
                dataset.unbatch()
                .cache()
                .shuffle(1000, seed=SEED, reshuffle_each_iteration=True)
                .batch(batch_size)
                # unbatch() hides the number of batches; without it, fit() shows
                # "Unknown" steps and warns that the data ran out at the first epoch.
                .apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
            )
        else:
            dataset = dataset.cache()
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
        dataset.class_names = class_names
        splits.append(dataset)
    return tuple(splits)


# --------------------------------------------------------------------------
# Autograding budget
# --------------------------------------------------------------------------


AUTOGRADE_BATCHES = 2


def autograding() -> bool:
    """True while nbgrader autogrades or validates this notebook."""
    return os.environ.get("NBGRADER_EXECUTION") in ("autograde", "validate")


def epochs(full: int) -> int:
    """Return ``full`` epochs normally and 1 epoch while autograding."""
    return 1 if autograding() else full


# --------------------------------------------------------------------------
# Figures shown in the notebook
# --------------------------------------------------------------------------


def show_images(dataset, class_names=CLASS_NAMES, count=9):
    """Show the first ``count`` images of a batched dataset in a grid with their labels."""
    import matplotlib.pyplot as plt

    images, labels = next(iter(dataset))
    figure = plt.figure(figsize=(8, 8))
    for i in range(min(count, len(images))):
        axis = figure.add_subplot(3, 3, i + 1)
        axis.imshow(images[i].numpy().astype("uint8"))
        axis.set_title(class_names[int(labels[i])])
        axis.axis("off")
    figure.tight_layout()
    return figure


def show_augmented(image, data_augmentation, count=9):
    """Show one image passed ``count`` times through ``data_augmentation``."""
    import matplotlib.pyplot as plt
    import tensorflow as tf

    figure = plt.figure(figsize=(8, 8))
    batch = tf.expand_dims(image, 0)
    for i in range(count):
        augmented = data_augmentation(batch, training=True)
        axis = figure.add_subplot(3, 3, i + 1)
        axis.imshow(augmented[0].numpy().astype("uint8"))
        axis.axis("off")
    figure.suptitle("One photo, augmented nine times")
    figure.tight_layout()
    return figure


def plot_history(*histories, marker_epoch=None):
    """Plot accuracy and loss of one or more consecutive ``fit()`` histories as one run.

    ``marker_epoch`` draws a vertical line where fine-tuning starts.
    """
    import matplotlib.pyplot as plt

    curves = {}
    for history in histories:
        for key, values in history.history.items():
            curves.setdefault(key, []).extend(values)
    figure, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for prefix, label in (("", "Training"), ("val_", "Validation")):
            values = curves.get(prefix + metric, [])
            axis.plot(range(1, len(values) + 1), values, marker="o", label=f"{label} {metric}")
        if marker_epoch is not None:
            axis.axvline(
                marker_epoch + 0.5, color="grey", linestyle="--", label="Start fine-tuning"
            )
        axis.set_ylabel(metric.capitalize())
        axis.legend(loc="best")
    axes[0].set_ylim(0, 1)
    axes[1].set_xlabel("Epoch")
    figure.tight_layout()
    return figure


def predict_dataset(model, dataset):
    """Return ``(images, labels, probabilities)`` for every image of ``dataset``."""
    import numpy as np
    import tensorflow as tf

    images, labels, probabilities = [], [], []
    for batch_images, batch_labels in dataset:
        logits = model.predict_on_batch(batch_images)
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
        probabilities.append(tf.sigmoid(logits).numpy().ravel())
    return np.concatenate(images), np.concatenate(labels), np.concatenate(probabilities)


def plot_confusion_matrix(labels, probabilities, class_names=CLASS_NAMES, threshold=0.5):
    """Draw the 2x2 confusion matrix; the probability is that of class 1 (``not alpaca``)."""
    import matplotlib.pyplot as plt
    import numpy as np

    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    matrix = np.zeros((2, 2), dtype=int)
    for truth, guess in zip(np.asarray(labels).astype(int), predicted):
        matrix[truth, guess] += 1
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        axis.text(column, row, str(value), ha="center", va="center", color=color, fontsize=14)
    axis.set_xticks([0, 1], [f"predicted\n{name}" for name in class_names])
    axis.set_yticks([0, 1], [f"true\n{name}" for name in class_names])
    axis.set_title(f"Accuracy {np.trace(matrix) / matrix.sum():.2f} on {matrix.sum()} images")
    figure.tight_layout()
    return figure, matrix


def show_misclassified(
    images, labels, probabilities, class_names=CLASS_NAMES, threshold=0.5, limit=12
):
    """Show the misclassified images with the predicted probability of ``not alpaca``."""
    import matplotlib.pyplot as plt
    import numpy as np

    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    wrong = np.flatnonzero(predicted != np.asarray(labels).astype(int))[:limit]
    if len(wrong) == 0:
        print("No validation image is misclassified.")
        return None
    columns = min(4, len(wrong))
    rows = -(-len(wrong) // columns)
    figure = plt.figure(figsize=(3 * columns, 3.5 * rows))
    for place, i in enumerate(wrong):
        axis = figure.add_subplot(rows, columns, place + 1)
        axis.imshow(images[i].astype("uint8"))
        axis.set_title(
            f"true: {class_names[int(labels[i])]}\nP(not alpaca) = {probabilities[i]:.2f}",
            fontsize=9,
        )
        axis.axis("off")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------
# `trainable` vs `training`: measured on the installed Keras
# --------------------------------------------------------------------------
#
# `probe_trainable_training()` builds tiny models and measures, on the Keras
# that is installed, what `layer.trainable` and the call-time `training`
# argument do to BatchNormalization and Dropout inside `fit()` and `predict()`.
# `CLAIMS` holds the answers the notebook and docs/trainable-vs-training.md
# give, per Keras version range; tests/test_trainable_training.py checks them
# against the live probe and against the notebook's text.

PROBE_TRAINING_VALUES = (None, True, False)
PROBE_PHASES = ("fit", "predict")
KERAS_RANGES = ("3.0 to 3.15", "3.16 and later")


def keras_version_range(version=None):
    """Return the column of `CLAIMS` for a Keras version: "3.0 to 3.15" or "3.16 and later".

    Returns None for versions the claims do not cover (Keras 2, ``tf_keras``).
    The default is the Keras that ``tf.keras`` is on this machine.
    """
    import re

    if version is None:
        import tensorflow as tf

        version = tf.keras.__version__
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if not match:
        return None
    major_minor = (int(match.group(1)), int(match.group(2)))
    if major_minor < (3, 0):
        return None
    return KERAS_RANGES[0] if major_minor < (3, 16) else KERAS_RANGES[1]


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
    import numpy as np

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
            keras.ops.convert_to_numpy(v)
            for v in (layer.moving_mean, layer.moving_variance, layer.gamma, layer.beta)
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
    import numpy as np

    # All ones in, all ones expected out. Dropout at rate 0.5 turns each value
    # into 0 or 2, so the loss is exactly 1 when it drops and 0 when it does not.
    x = np.ones((16, 8), dtype="float32")
    layer = keras.layers.Dropout(0.5, seed=SEED, name="dropout")
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


def probe_trainable_training():
    """Measure what `trainable` and `training` do on the installed Keras.

    For BatchNormalization and for Dropout, and for every combination of
    ``layer.trainable`` in {True, False}, the ``training`` value the layer's
    base model is called with in {None, True, False} (None: not passed), and
    ``fit()`` or ``predict()``, it builds a tiny model as in the assignment::

        x = base_model(inputs, training=training)

    runs one step and records, for BatchNormalization, which statistics
    normalise the data (``"batch"`` or ``"moving"``), whether the moving
    statistics changed and whether gamma or beta changed, and for Dropout
    whether it drops values. Returns ``{"keras": version, "backend": name,
    "rows": [...]}``. Takes a few seconds on a CPU.
    """
    import warnings

    import tensorflow as tf

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
    finally:
        logger.setLevel(level)
    return {"keras": keras.__version__, "backend": keras.backend.backend(), "rows": rows}


def probe_rows(table, layer, **where):
    """Return the rows of ``table`` for ``layer`` whose fields equal ``where``."""
    return [
        row
        for row in table["rows"]
        if row["layer"] == layer and all(row[key] == value for key, value in where.items())
    ]


def format_probe_table(table) -> str:
    """Render the table of `probe_trainable_training()` as plain text."""

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
    return "\n".join(lines)


def _answer(condition: bool) -> str:
    return "yes" if condition else "no"


# Each claim: the question as the notebook and the docs ask it, the answer for
# each Keras range, and how to read the answer from the probe's table. The
# "3.0 to 3.15" answers were measured on 3.15.1; the "3.16 and later" answers
# on Keras master (3.16-dev, after keras-team/keras PR #23364). The tests
# compare the column of the installed Keras with the live probe, and the
# notebook's claims table with this dict.
CLAIMS = (
    (
        "Does `trainable = False` put BN in inference mode during `fit()`?",
        {"3.0 to 3.15": "yes", "3.16 and later": "yes"},
        lambda t: _answer(
            all(
                r["statistics"] == "moving"
                for r in probe_rows(t, "BatchNormalization", trainable=False)
            )
        ),
    ),
    (
        "Does `trainable = False` freeze BN's moving statistics, gamma and beta?",
        {"3.0 to 3.15": "yes", "3.16 and later": "yes"},
        lambda t: _answer(
            not any(
                r["moving_updated"] or r["gamma_beta_updated"]
                for r in probe_rows(t, "BatchNormalization", trainable=False)
            )
        ),
    ),
    (
        "Does `training=False` keep BN in inference mode during `fit()`?",
        {"3.0 to 3.15": "no", "3.16 and later": "yes"},
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
        {"3.0 to 3.15": "no", "3.16 and later": "no"},
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
        {"3.0 to 3.15": "no", "3.16 and later": "no"},
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
        {"3.0 to 3.15": "no", "3.16 and later": "yes"},
        lambda t: _answer(
            not any(r["drops"] for r in probe_rows(t, "Dropout", training=False, phase="fit"))
        ),
    ),
)


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
        f"Your Keras is {table['keras']}: the column to read is {keras_range!r}."
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
    fine_tune_at=FINE_TUNE_AT,
    base_learning_rate=BASE_LEARNING_RATE,
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
    import numpy as np
    import tensorflow as tf

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
    ).history
    trainable = build_model()
    trainable.set_weights(frozen.get_weights())

    frozen = fine_tune(frozen, fine_tune_at, base_learning_rate)
    base_model = get_base_model(trainable)
    # The base model itself must be trainable, or none of its layers trains.
    base_model.trainable = True
    for index, layer in enumerate(base_model.layers):
        layer.trainable = index >= fine_tune_at
    compile_model(trainable, base_learning_rate / 10)

    results = {}
    for label, model in (("BN frozen", frozen), ("BN trainable", trainable)):
        layer = get_base_model(model).get_layer(watched_layer)
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
        # Start the curves at the last epoch of the classifier's training.
        results[label] = {
            "history": {key: head[key][-1:] + values for key, values in history.history.items()},
            "moving_variance": variances,
            "first_epoch": head_epochs,
        }
    return results


def plot_bn_experiment(results, watched_layer="Conv_1_bn"):
    """Plot validation accuracy, validation loss and BN moving variance for `bn_experiment()`."""
    import matplotlib.pyplot as plt
    import numpy as np

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


# --------------------------------------------------------------------------
# TensorFlow's start-up notes
# --------------------------------------------------------------------------

# What TensorFlow 2.21 writes to stderr when it is imported, from its C++ code:
# twice (once per library) a warning of absl, the logging library, and the note
# that oneDNN is on. TF_CPP_MIN_LOG_LEVEL does not silence them, and
# TF_ENABLE_ONEDNN_OPTS=0 would, but makes training 2.5 times slower.
STARTUP_NOTES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
)


@contextlib.contextmanager
def tensorflow_startup_notes_hidden():
    """Hide TensorFlow's start-up notes (see `STARTUP_NOTES`) while the block runs.

    Use it around ``import tensorflow``. C++ code writes the notes straight to
    the process's stderr (file descriptor 2), below Python's ``sys.stderr``. So
    while the block runs, descriptor 2 goes to a temporary file; afterwards every
    line of that file that is not a start-up note is written to ``sys.stderr``.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2: nothing would be shown anyway
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [
                line
                for line in text.splitlines(keepends=True)
                if not any(note in line for note in STARTUP_NOTES)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


if __name__ == "__main__":
    _table = probe_trainable_training()
    print(format_probe_table(_table))
    print()
    print(format_claims(_table))
