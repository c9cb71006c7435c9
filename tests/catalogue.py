"""Variants of the exercise solutions, built from the master notebook's source.

Each variant takes the source of a solution cell (found by its nbgrader
``grade_id``), applies textual replacements, and execs it in a namespace like
the notebook's. A replacement that no longer matches raises, so the catalogue
cannot silently go stale when the solution changes.
"""

from __future__ import annotations

import dataclasses
import re

import trainable_training
from grader import plan
from tools import build, master

SOLUTION_BLOCK = re.compile(
    r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n", re.S | re.M
)


def solution_source(grade_id):
    return master.source_of(grade_id)


def stub_source(grade_id):
    """The source as nbgrader releases it: the solution block becomes a stub."""
    source = solution_source(grade_id)
    stubbed, count = SOLUTION_BLOCK.subn(
        lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()\n", source
    )
    assert count == 1, f"no solution block in the cell {grade_id!r}"
    return stubbed


def apply(source, replacements):
    """Apply ``(old, new)`` replacements; each must match, and the source must change."""
    for old, new in replacements:
        if isinstance(old, re.Pattern):
            source, count = old.subn(new, source)
        else:
            count = source.count(old)
            source = source.replace(old, new)
        assert count >= 1, f"stale catalogue entry: {old!r} is not in the solution any more"
    return source


def namespace():
    """A namespace like the notebook's after its set-up cell."""
    return master.setup_namespace()


FUNCTIONS = {
    "data_augmenter": "data_augmenter",
    "alpaca_model": "alpaca_model",
    "fine_tune": "fine_tune",
}


def load(grade_id, replacements=(), stub=False, env=None):
    """Exec the (changed) cell and return its function."""
    env = dict(env if env is not None else namespace())
    if "data_augmenter" not in env and grade_id != "data_augmenter":
        exec(solution_source("data_augmenter"), env)
    source = stub_source(grade_id) if stub else solution_source(grade_id)
    changed = apply(source, replacements)
    if replacements:
        assert changed != source, f"the replacements left the {grade_id!r} cell unchanged"
    exec(compile(changed, f"<{grade_id} variant>", "exec"), env)
    return env[FUNCTIONS[grade_id]]


@dataclasses.dataclass(frozen=True)
class Variant:
    id: str
    grade_id: str
    replacements: tuple
    test: str = ""  # the public test that must fail (mistakes only)
    phrase: str = ""  # a key phrase of its message (mistakes only)
    kwargs: tuple = ()  # extra keyword arguments of the public test


def on_this_keras(question, when_yes, when_no):
    """The words a message uses for the installed Keras's answer to a claim of the probe."""
    version = trainable_training.keras_version()
    words = when_yes if trainable_training.answer(question, version) == "yes" else when_no
    return f"On your Keras ({version}), {words}"


def mistake(id, grade_id, replacements, test, phrase, **kwargs):
    return Variant(id, grade_id, tuple(replacements), test, phrase, tuple(kwargs.items()))


def correct(id, grade_id, replacements):
    return Variant(id, grade_id, tuple(replacements))


# --------------------------------------------------------------------------
# Mistakes: each must fail its public test with a message naming the problem.
# --------------------------------------------------------------------------

FLIP = 'tfl.RandomFlip("horizontal")'
ROTATE = "tfl.RandomRotation(0.2)"
AUG_BLOCK = (
    "    data_augmentation = tf.keras.Sequential()\n"
    f"    data_augmentation.add({FLIP})\n"
    f"    data_augmentation.add({ROTATE})\n"
)
BASE_CALL = "x = base_model(x, training=False)"
METRIC_LINE = '        metrics=[tf.keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],\n'
COMPILE = re.compile(r"\n    model\.compile\(.*?\n    \)\n", re.S)
FT_LOOP = (
    "    for index, layer in enumerate(base_model.layers):\n"
    "        is_batch_norm = isinstance(layer, tfl.BatchNormalization)\n"
    "        layer.trainable = index >= fine_tune_at and not is_batch_norm\n"
)

MISTAKES = [
    # Exercise 1
    mistake(
        "flip-vertical",
        "data_augmenter",
        [(FLIP, 'tfl.RandomFlip("vertical")')],
        "data_augmenter_test",
        "RandomFlip(mode='vertical')",
    ),
    mistake(
        "flip-both",
        "data_augmenter",
        [(FLIP, 'tfl.RandomFlip("horizontal_and_vertical")')],
        "data_augmenter_test",
        "Flip left-right only",
    ),
    mistake(
        "rotation-0.1",
        "data_augmenter",
        [(ROTATE, "tfl.RandomRotation(0.1)")],
        "data_augmenter_test",
        "RandomRotation(factor=0.1)",
    ),
    mistake(
        "opposite-order",
        "data_augmenter",
        [
            (
                AUG_BLOCK,
                "    data_augmentation = tf.keras.Sequential()\n"
                f"    data_augmentation.add({ROTATE})\n"
                f"    data_augmentation.add({FLIP})\n",
            )
        ],
        "data_augmenter_test",
        "opposite order",
    ),
    mistake(
        "third-layer",
        "data_augmenter",
        [
            (
                f"    data_augmentation.add({ROTATE})\n",
                f"    data_augmentation.add({ROTATE})\n"
                "    data_augmentation.add(tfl.RandomZoom(0.1))\n",
            )
        ],
        "data_augmenter_test",
        "expected exactly 2",
    ),
    mistake(
        "returns-list",
        "data_augmenter",
        [(AUG_BLOCK, f"    data_augmentation = [{FLIP}, {ROTATE}]\n")],
        "data_augmenter_test",
        "returned a list of 2 layers",
    ),
    mistake(
        "returns-function",
        "data_augmenter",
        [
            (
                AUG_BLOCK,
                AUG_BLOCK + "    model = data_augmentation\n"
                "    data_augmentation = lambda images: model(images)\n",
            )
        ],
        "data_augmenter_test",
        "returned a function",
    ),
    mistake(
        "returns-nothing",
        "data_augmenter",
        [("    return data_augmentation\n", "")],
        "data_augmenter_test",
        "returned None",
    ),
    # Exercise 2
    mistake(
        "base-not-frozen",
        "alpaca_model",
        [("    base_model.trainable = False\n", "")],
        "frozen_base_test",
        "base_model.trainable is True",
    ),
    mistake(
        "training-false-missing",
        "alpaca_model",
        [(BASE_CALL, "x = base_model(x)")],
        "frozen_base_test",
        "training=None; expected training=False",
    ),
    # The message says what training=False does on the learner's Keras, as measured.
    mistake(
        "training-false-missing-says-what-keras-does",
        "alpaca_model",
        [(BASE_CALL, "x = base_model(x)")],
        "frozen_base_test",
        on_this_keras(
            trainable_training.TRAINING_FALSE_KEEPS_BN,
            "training=False keeps the BatchNormalization layers of the base model in "
            "inference mode during fit()",
            "training=False does not keep the BatchNormalization layers of the base "
            "model in inference mode during fit() (base_model.trainable = False does)",
        ),
    ),
    mistake(
        "training-true",
        "alpaca_model",
        [(BASE_CALL, "x = base_model(x, training=True)")],
        "frozen_base_test",
        "training=True; expected training=False",
    ),
    mistake(
        "include-top",
        "alpaca_model",
        [("include_top=False", "include_top=True")],
        "alpaca_model_test",
        "include_top=False",
    ),
    mistake(
        "weights-none",
        "alpaca_model",
        [("weights=BASE_WEIGHTS", "weights=None")],
        "alpaca_model_test",
        "does not have the ImageNet weights",
    ),
    mistake(
        "base-input-shape-224",
        "alpaca_model",
        [("input_shape=input_shape, include_top", "input_shape=(224, 224, 3), include_top")],
        "alpaca_model_test",
        "another image size than the inputs",
    ),
    mistake(
        "preprocess-skipped",
        "alpaca_model",
        [("    x = preprocess_input(x)\n", "")],
        "alpaca_model_test",
        "preprocess_input() is missing",
    ),
    mistake(
        "preprocess-before-augmentation",
        "alpaca_model",
        [
            (
                "    x = data_augmentation(inputs)\n    x = preprocess_input(x)\n",
                "    x = preprocess_input(inputs)\n    x = data_augmentation(x)\n",
            )
        ],
        "alpaca_model_test",
        "preprocess_input() comes before data_augmentation",
    ),
    mistake(
        "flatten",
        "alpaca_model",
        [("tfl.GlobalAveragePooling2D()(x)", "tfl.Flatten()(x)")],
        "alpaca_model_test",
        "GlobalAveragePooling2D(), not Flatten",
    ),
    mistake(
        "pooling-missing",
        "alpaca_model",
        [("    x = tfl.GlobalAveragePooling2D()(x)\n", "")],
        "alpaca_model_test",
        "GlobalAveragePooling2D(), not Dropout",
    ),
    mistake(
        "dropout-missing",
        "alpaca_model",
        [("    x = tfl.Dropout(0.2)(x)\n", "")],
        "alpaca_model_test",
        "Add tfl.Dropout(0.2)",
    ),
    mistake(
        "dropout-0.5",
        "alpaca_model",
        [("tfl.Dropout(0.2)", "tfl.Dropout(0.5)")],
        "alpaca_model_test",
        "Dropout(rate=0.5); expected Dropout(rate=0.2)",
    ),
    mistake(
        "dense-sigmoid",
        "alpaca_model",
        [("tfl.Dense(1)(x)", "tfl.Dense(1, activation='sigmoid')(x)")],
        "alpaca_model_test",
        "remove the activation argument",
    ),
    mistake(
        "dense-2-softmax",
        "alpaca_model",
        [("tfl.Dense(1)(x)", "tfl.Dense(2, activation='softmax')(x)")],
        "alpaca_model_test",
        "Two classes need one logit",
    ),
    mistake(
        "image-shape-ignored",
        "alpaca_model",
        [
            ("input_shape=input_shape, include_top", "input_shape=(160, 160, 3), include_top"),
            ("tf.keras.Input(shape=input_shape)", "tf.keras.Input(shape=(160, 160, 3))"),
        ],
        "alpaca_model_test",
        "layer 0 (InputLayer) has output shape (None, 160, 160, 3)",
        image_shape=(128, 128),
    ),
    mistake(
        "fresh-augmenter",
        "alpaca_model",
        [("x = data_augmentation(inputs)", "x = data_augmenter()(inputs)")],
        "alpaca_model_test",
        "not the data_augmentation passed to alpaca_model()",
    ),
    mistake(
        "augmentation-skipped",
        "alpaca_model",
        [("x = data_augmentation(inputs)", "x = inputs")],
        "alpaca_model_test",
        "Apply the data_augmentation argument",
    ),
    # Exercise 3
    mistake(
        "unfreeze-before",
        "fine_tune",
        [("index >= fine_tune_at and", "index < fine_tune_at and")],
        "fine_tune_test",
        "the other way round",
    ),
    mistake(
        "off-by-one-after",
        "fine_tune",
        [("index >= fine_tune_at and", "index > fine_tune_at and")],
        "fine_tune_test",
        "Off by one",
    ),
    mistake(
        "off-by-one-before",
        "fine_tune",
        [("index >= fine_tune_at and", "index >= fine_tune_at - 1 and")],
        "fine_tune_test",
        "Off by one",
    ),
    mistake(
        "bn-trainable",
        "fine_tune",
        [("index >= fine_tune_at and not is_batch_norm", "index >= fine_tune_at")],
        "fine_tune_test",
        "BatchNormalization",
    ),
    mistake(
        "bn-by-lowercase-name-only",
        "fine_tune",
        [("isinstance(layer, tfl.BatchNormalization)", "'bn' in layer.name")],
        "fine_tune_test",
        "keep every BatchNormalization layer",
    ),
    # Step 1 asks for it; the message says what happens without it on the learner's Keras.
    mistake(
        "base-trainable-missing",
        "fine_tune",
        [("    base_model.trainable = True\n", "")],
        "fine_tune_test",
        on_this_keras(
            trainable_training.LAYER_TRAINS_IN_FROZEN_MODEL,
            "the layers you unfroze would train anyway, but base_model.trainable_weights "
            "would list none of them",
            "none of the layers you unfroze would train, whatever their own flag",
        ),
    ),
    mistake(
        "base-trainable-after-loop",
        "fine_tune",
        [
            ("    base_model.trainable = True\n", ""),
            (FT_LOOP, FT_LOOP + "    base_model.trainable = True\n"),
        ],
        "fine_tune_test",
        "Write base_model.trainable = True before the loop",
    ),
    mistake(
        "not-recompiled",
        "fine_tune",
        [(COMPILE, "\n")],
        "fine_tune_compile_test",
        "Compile the model again inside fine_tune()",
    ),
    mistake(
        "lr-not-tenth",
        "fine_tune",
        [("base_learning_rate / 10", "base_learning_rate")],
        "fine_tune_compile_test",
        "expected base_learning_rate / 10",
    ),
    mistake(
        "lr-hard-coded",
        "fine_tune",
        [("base_learning_rate / 10", "0.0001")],
        "fine_tune_compile_test",
        "written as a number",
        base_learning_rate=0.01,
    ),
    mistake(
        "loss-without-from-logits",
        "fine_tune",
        [("BinaryCrossentropy(from_logits=True)", "BinaryCrossentropy()")],
        "fine_tune_compile_test",
        "from_logits=False",
    ),
    mistake(
        "loss-string",
        "fine_tune",
        [("tf.keras.losses.BinaryCrossentropy(from_logits=True)", "'binary_crossentropy'")],
        "fine_tune_compile_test",
        "expected tf.keras.losses.BinaryCrossentropy",
    ),
    mistake(
        "metric-missing",
        "fine_tune",
        [(METRIC_LINE, "")],
        "fine_tune_compile_test",
        "the metrics are none; expected tf.keras.metrics.BinaryAccuracy(threshold=0.0",
    ),
    mistake(
        "accuracy-string",
        "fine_tune",
        [(METRIC_LINE, '        metrics=["accuracy"],\n')],
        "fine_tune_compile_test",
        "a probability above 0.62, not 0.5",
    ),
    mistake(
        "accuracy-default-threshold",
        "fine_tune",
        [("BinaryAccuracy(threshold=0.0, ", "BinaryAccuracy(")],
        "fine_tune_compile_test",
        "plain 'accuracy' says 'not alpaca' when the logit is above 0.5",
    ),
    mistake(
        "sgd",
        "fine_tune",
        [("optimizers.Adam(", "optimizers.SGD(")],
        "fine_tune_compile_test",
        "the optimizer is SGD",
    ),
    mistake(
        "returns-nothing",
        "fine_tune",
        [("    return model\n", "")],
        "fine_tune_test",
        "returned None",
    ),
]

# --------------------------------------------------------------------------
# Correct variants: each must pass every public test of its exercise.
# --------------------------------------------------------------------------

METRIC_NAME = ('BinaryAccuracy(threshold=0.0, name="accuracy")', "BinaryAccuracy(threshold=0.0)")
IMPORT_KERAS = ("    ### BEGIN SOLUTION\n", "    ### BEGIN SOLUTION\n    import keras\n")

CORRECT = [
    # Exercise 1
    correct(
        "sequential-from-list",
        "data_augmenter",
        [(AUG_BLOCK, f"    data_augmentation = tf.keras.Sequential([{FLIP}, {ROTATE}])\n")],
    ),
    correct("tf.keras.layers", "data_augmenter", [("tfl.Random", "tf.keras.layers.Random")]),
    correct(
        "keras.layers",
        "data_augmenter",
        [
            IMPORT_KERAS,
            ("tfl.Random", "keras.layers.Random"),
            ("tf.keras.Sequential", "keras.Sequential"),
        ],
    ),
    correct(
        "keyword-arguments",
        "data_augmenter",
        [(FLIP, 'tfl.RandomFlip(mode="horizontal")'), (ROTATE, "tfl.RandomRotation(factor=0.2)")],
    ),
    correct("rotation-tuple", "data_augmenter", [(ROTATE, "tfl.RandomRotation((-0.2, 0.2))")]),
    # Exercise 2
    correct("keras.Input", "alpaca_model", [IMPORT_KERAS, ("tf.keras.Input(", "keras.Input(")]),
    correct(
        "keras.layers",
        "alpaca_model",
        [
            IMPORT_KERAS,
            ("tfl.GlobalAveragePooling2D", "keras.layers.GlobalAveragePooling2D"),
            ("tfl.Dropout", "keras.layers.Dropout"),
            ("tfl.Dense", "keras.layers.Dense"),
            ("tf.keras.Model(", "keras.Model("),
            ("tf.keras.applications.MobileNetV2", "keras.applications.MobileNetV2"),
        ],
    ),
    correct("tf.keras.layers", "alpaca_model", [("tfl.", "tf.keras.layers.")]),
    correct(
        "keyword-arguments",
        "alpaca_model",
        [("tfl.Dropout(0.2)", "tfl.Dropout(rate=0.2)"), ("tfl.Dense(1)", "tfl.Dense(units=1)")],
    ),
    correct("activation-none", "alpaca_model", [("tfl.Dense(1)", "tfl.Dense(1, activation=None)")]),
    correct(
        "activation-linear", "alpaca_model", [("tfl.Dense(1)", "tfl.Dense(1, activation='linear')")]
    ),
    correct(
        "preprocess-module",
        "alpaca_model",
        [("preprocess_input(x)", "tf.keras.applications.mobilenet_v2.preprocess_input(x)")],
    ),
    correct(
        "image-shape-plus-3",
        "alpaca_model",
        [("tf.keras.Input(shape=input_shape)", "tf.keras.Input(shape=image_shape + (3,))")],
    ),
    # Exercise 3
    correct("lr-times-0.1", "fine_tune", [("base_learning_rate / 10", "0.1 * base_learning_rate")]),
    correct(
        "bn-by-name",
        "fine_tune",
        [
            (
                "isinstance(layer, tfl.BatchNormalization)",
                "layer.name.endswith('_bn') or layer.name.endswith('_BN')",
            )
        ],
    ),
    correct(
        "bn-by-name-contains",
        "fine_tune",
        [("isinstance(layer, tfl.BatchNormalization)", "'bn' in layer.name or 'BN' in layer.name")],
    ),
    correct(
        "slice-then-bn-loop",
        "fine_tune",
        [
            (
                FT_LOOP,
                "    for layer in base_model.layers[:fine_tune_at]:\n"
                "        layer.trainable = False\n"
                "    for layer in base_model.layers:\n"
                "        if isinstance(layer, tfl.BatchNormalization):\n"
                "            layer.trainable = False\n",
            )
        ],
    ),
    correct(
        "if-in-loop",
        "fine_tune",
        [
            (
                FT_LOOP,
                "    for index, layer in enumerate(base_model.layers):\n"
                "        if index < fine_tune_at:\n"
                "            layer.trainable = False\n"
                "        elif isinstance(layer, tf.keras.layers.BatchNormalization):\n"
                "            layer.trainable = False\n"
                "        else:\n"
                "            layer.trainable = True\n",
            )
        ],
    ),
    correct(
        "keras-not-tf-keras",
        "fine_tune",
        [
            IMPORT_KERAS,
            ("tf.keras.optimizers.Adam", "keras.optimizers.Adam"),
            ("tf.keras.losses.BinaryCrossentropy", "keras.losses.BinaryCrossentropy"),
            ("tf.keras.metrics.BinaryAccuracy(", "keras.metrics.BinaryAccuracy("),
        ],
    ),
    # On Keras 3, compile() keeps no list of trainable weights: the optimizer and the
    # training function are built at the first fit(), so compiling before changing
    # `trainable` works as well (the instructions still say after).
    correct(
        "compile-before-unfreezing",
        "fine_tune",
        [
            (
                re.compile(
                    r"(    base_model\.trainable = True\n.*?)(\n    model\.compile\(.*?\n    \)\n)",
                    re.S,
                ),
                r"\2\1",
            )
        ],
    ),
    # Later cells read the metric whatever its name (utils.history_curves()).
    correct("metric-without-name", "fine_tune", [METRIC_NAME]),
    correct(
        "keyword-call",
        "fine_tune",
        [("Adam(learning_rate=base_learning_rate / 10)", "Adam(base_learning_rate / 10)")],
    ),
]


def _public_calls():
    """{exercise: [(test, kwargs)]}: every call of the master's test cells, hidden ones too."""
    calls = {name: [] for name in FUNCTIONS}
    for step in plan.steps(build.master_notebook()):
        for call in step.calls:
            calls[call.target].append((call.test, call.kwargs))
    return calls


# The public tests of each exercise, with the hidden-test arguments, as the master has them.
PUBLIC_CALLS = _public_calls()


def call_kwargs(kwargs):
    """Turn a PUBLIC_CALLS entry into keyword arguments (they are literals already)."""
    return dict(kwargs)
