"""Public tests of the "Transfer learning with MobileNetV2" assignment.

One ``<exercise>_test(target)`` per test cell, taking your function. Each test
prints one line when everything is right, and otherwise raises an AssertionError
that names the exercise, the check that failed, what was expected and what was
found, and the step of the instructions to look at.

Each test has two halves:

- ``produce_<exercise>(target, ...)`` calls your function and returns a record of
  what came back, as plain data (see `test_utils.py`);
- ``check_<...>(record, ...)`` judges that record.

The tests build their own models from your function; they never touch the models
of the notebook.
"""

from __future__ import annotations

import inspect
import json
import math

import keras

import test_utils as tu
import trainable_training as tt
import utils

IMG_SIZE = utils.IMG_SIZE
BASE_LEARNING_RATE = utils.BASE_LEARNING_RATE
FINE_TUNE_AT = utils.FINE_TUNE_AT
# MobileNetV2 frozen, Dense(1) on top: the counts do not depend on the image size.
TRAINABLE_PARAMS = 1_281
NON_TRAINABLE_PARAMS = 2_257_984
# Image size of the small model the Exercise 3 tests fine-tune.
FINE_TUNE_IMAGE_SHAPE = (96, 96)
# learning_rate is stored as float32: compare with float32 precision.
LEARNING_RATE_RTOL = 1e-6

ACCURACY_NAMES = ("accuracy", "acc", "binary_accuracy")
# The augmenter the Exercise 2 tests pass to your alpaca_model(), independent of
# Exercise 1 (see test_utils.augmenter()).
TEST_AUGMENTER = {
    "name": "test_augmenter",
    "layers": [["RandomFlip", {"mode": "horizontal"}], ["RandomRotation", {"factor": 0.2}]],
}


# --------------------------------------------------------------------------
# Exercise 1
# --------------------------------------------------------------------------


def data_augmenter_test(target, image_shape=IMG_SIZE):
    """Test Exercise 1: a Sequential of RandomFlip('horizontal') then RandomRotation(0.2)."""
    check_data_augmenter(produce_data_augmenter(target), image_shape)


def produce_data_augmenter(target):
    """Call your data_augmenter(); record what it returned."""
    return tu.call_and_record(target, (), keras.Sequential)


def check_data_augmenter(record, image_shape=IMG_SIZE):
    """Judge the record of data_augmenter(): its layers, then what it does to images."""
    ex = "data_augmenter"
    step = "Exercise 1"
    if "error" in record:
        tu.learner_error(ex, record["error"])
    returned = record["returned"]
    if not returned["is_sequential"]:
        if returned["sequence_length"] is not None:
            found = f"a {returned['type']} of {returned['sequence_length']} layers"
            hint = "Wrap the layers in a model: pass the list to tf.keras.Sequential()."
        elif returned["none"]:
            found = "None"
            hint = "End the function with `return data_augmentation`."
        elif returned["callable"] and not returned["is_layer"]:
            found = f"a function ({returned['name'] or returned['type']})"
            hint = "Return the tf.keras.Sequential model itself, not a function that uses it."
        else:
            found = f"a {returned['type']}"
            hint = "Build a tf.keras.Sequential model and add the two layers to it."
        tu.fail(ex, f"returned {found}; expected a tf.keras.Sequential model. {hint}")
    augmenter = tu.rebuild_model(ex, record["model"], "the augmenter")
    if not isinstance(augmenter, keras.Sequential):
        tu.fail(ex, f"returned a {type(augmenter).__name__}; expected a tf.keras.Sequential model.")

    expected = [("RandomFlip(mode='horizontal')",), ("RandomRotation(factor=0.2)",)]
    got = [(tu.describe(layer),) for layer in augmenter.layers]
    index = tu.first_difference(expected, got)
    if index is not None:
        table = tu.render_table(("expected layer", "got layer"), expected, got, mark=index)
        if len(got) > len(expected) and index >= len(expected):
            tu.fail(
                ex,
                f"the Sequential has {len(got)} layers; expected exactly 2. Remove "
                f"{got[index][0]} ({step} asks for two layers only).",
                table,
            )
        if index >= len(got):
            tu.fail(
                ex,
                f"the Sequential has {len(got)} layer(s); expected 2: "
                f"RandomFlip then RandomRotation ({step}).",
                table,
            )
        want, found = expected[index][0], got[index][0]
        kinds = [type(layer).__name__ for layer in augmenter.layers]
        if kinds == ["RandomRotation", "RandomFlip"]:
            hint = "The two layers are in the opposite order: RandomFlip comes first."
        elif found.startswith("RandomFlip("):
            hint = (
                "Flip left-right only: RandomFlip('horizontal'). An upside-down alpaca "
                "is not a photo you will meet (step 1)."
            )
        elif found.startswith("RandomRotation("):
            hint = "Rotate by up to 20% of a full turn: RandomRotation(0.2) (step 2)."
        else:
            hint = f"Layer {index} must be {want} (step {index + 1} of {step})."
        tu.fail(ex, f"layer {index} is {found}; expected {want}. {hint}", table)

    # Behaviour: random in training, the identity in inference, any image size.
    images, _ = tu.random_batch(image_shape)

    def run(training):
        return keras.ops.convert_to_numpy(augmenter(images, training=training))

    augmented = tu.run_check(
        ex, f"calling the augmenter on images of shape {images.shape}", run, True
    )
    if augmented.shape != images.shape:
        tu.fail(
            ex,
            f"on images of shape {images.shape}, the augmenter returns shape "
            f"{augmented.shape}; expected the same shape. Do not fix the input size "
            f"inside data_augmenter(): add only the two layers.",
        )
    unchanged = tu.run_check(ex, "calling the augmenter with training=False", run, False)
    if not (unchanged == images).all():
        tu.fail(
            ex,
            "with training=False the augmenter changes the images; expected them "
            "unchanged. Use only the two random layers of the instructions.",
        )
    tu.passed(ex)


# --------------------------------------------------------------------------
# Exercise 2
# --------------------------------------------------------------------------


def _base_model(ex, model):
    if not isinstance(model, keras.Model):
        found = "None" if model is None else f"a {type(model).__name__}"
        tu.fail(
            ex,
            f"returned {found}; expected a tf.keras.Model. End with "
            f"`return model`, where model = tf.keras.Model(inputs, outputs) (step 10).",
        )
    for layer in model.layers:
        if layer.name.startswith("mobilenetv2"):
            return layer
    names = ", ".join(f"{type(op).__name__} {op.name!r}" for op in model.operations)
    tu.fail(
        ex,
        f"no MobileNetV2 layer in the model; its layers are: {names}. Create the base "
        f"model with tf.keras.applications.MobileNetV2() and call it (steps 1 and 6).",
    )


def _what_keras_does(question, when_yes, when_no):
    """Say what Keras does, on the learner's Keras and on the others, from the measured claims.

    ``question`` is one of `trainable_training.CLAIMS`; ``when_yes`` and ``when_no``
    say in words what its two answers mean.
    """
    version = tt.keras_version()
    mine = tt.answer(question, version)
    words = {"yes": when_yes, "no": when_no}
    if mine is None:
        return ""
    others = [
        tt.column_title(column)
        for column, answer in next(a for q, a, _ in tt.CLAIMS if q == question).items()
        if answer != mine
    ]
    text = f"On your Keras ({version}), {words[mine]}"
    if others:
        text += f"; on {' and '.join(others)}, it is the other way round"
    return text + ". The notebook measures it in its section 'The claims, checked on your Keras'."


def _verify_mobilenet(ex, base_model, input_shape):
    """Fail unless the base model is Keras's MobileNetV2 layer by layer (not by its name)."""
    difference = tu.mobilenet_difference(base_model, input_shape)
    if difference is not None:
        index, got, want = difference
        tu.fail(
            ex,
            f"the base model is not Keras's MobileNetV2 for input_shape={tuple(input_shape)}: "
            f"its layer {index} is {got}; expected {want}, with MobileNetV2's configuration "
            f"and connections. Create it with tf.keras.applications.MobileNetV2("
            f"input_shape=input_shape, include_top=False, weights=BASE_WEIGHTS) (step 1).",
        )


def _expect_imagenet_weights(ex, base_model):
    """Fail unless every weight of the base model is the ImageNet weights file's."""
    ok, layer_name = tu.has_imagenet_weights(base_model)
    if not ok:
        tu.fail(
            ex,
            f"the base model does not have the ImageNet weights: the weights of its "
            f"layer {layer_name!r} differ from the weights file. Pass "
            f"weights=BASE_WEIGHTS to MobileNetV2() (step 1).",
        )


def _expected_rows(image_shape, augmenter_name):
    h, w = image_shape
    fh, fw = tu.base_feature_size(h), tu.base_feature_size(w)
    image = (None, h, w, 3)
    return [
        ("InputLayer", image, "InputLayer"),
        ("Sequential", image, f"Sequential {augmenter_name!r}"),
        ("TrueDivide", image, "TrueDivide (preprocess_input)"),
        ("Subtract", image, "Subtract (preprocess_input)"),
        ("Functional", (None, fh, fw, 1280), "MobileNetV2 (Functional)"),
        ("GlobalAveragePooling2D", (None, 1280), "GlobalAveragePooling2D"),
        ("Dropout", (None, 1280), "Dropout(rate=0.2)"),
        ("Dense", (None, 1), "Dense(units=1)"),
    ]


def _layer_hint(index, expected, got_ops, got_kinds):
    """Say which step of the instructions the first differing layer comes from."""
    want = expected[index][0]
    found = got_kinds[index] if index < len(got_kinds) else None
    if want in ("TrueDivide", "Subtract") or found in ("TrueDivide", "Subtract"):
        if "TrueDivide" not in got_kinds:
            return "preprocess_input() is missing: apply it right after data_augmentation (step 5)."
        if "Sequential" in got_kinds and got_kinds.index("TrueDivide") < got_kinds.index(
            "Sequential"
        ):
            return (
                "preprocess_input() comes before data_augmentation; augment first, then "
                "preprocess (steps 4 and 5)."
            )
    if want == "Sequential":
        return "Apply the data_augmentation argument to the inputs (step 4)."
    if want == "Functional" and found == "Functional":
        return "The base model must be MobileNetV2 with include_top=False (step 1)."
    if want == "GlobalAveragePooling2D":
        return (
            "Average each feature map with tfl.GlobalAveragePooling2D(), not "
            f"{found or 'nothing'} (step 7)."
        )
    if want == "Dropout":
        return "Add tfl.Dropout(0.2) after the pooling (step 8)."
    if want == "Dense":
        return "End with tfl.Dense(1) and no activation (step 9)."
    if want == "InputLayer":
        return "Start from tf.keras.Input(shape=input_shape) (step 3)."
    return "Follow the order of the steps of Exercise 2."


def alpaca_model_test(target, image_shape=IMG_SIZE, augmenter=TEST_AUGMENTER):
    """Test Exercise 2: the layers, their output shapes and the ImageNet weights."""
    check_alpaca_model(produce_alpaca_model(target, image_shape, augmenter), image_shape, augmenter)


def frozen_base_test(target, image_shape=IMG_SIZE, augmenter=TEST_AUGMENTER):
    """Test Exercise 2: the base model is frozen, called with training=False, and stays put."""
    check_frozen_base(produce_alpaca_model(target, image_shape, augmenter), image_shape)


def produce_alpaca_model(target, image_shape=IMG_SIZE, augmenter=TEST_AUGMENTER):
    """Call your alpaca_model() with a fresh augmenter; record the model it returned."""
    arguments = (tuple(image_shape), tu.augmenter(augmenter))
    return tu.call_and_record(target, arguments, keras.Model)


def _expect_model(ex, record, expected):
    """Fail on an error of the learner's code, or when it returned no model."""
    if "error" in record:
        tu.learner_error(ex, record["error"])
    returned = record["returned"]
    if not returned["is_model"]:
        found = "None" if returned["none"] else f"a {returned['type']}"
        tu.fail(ex, f"returned {found}; expected {expected}")


def _rebuild_alpaca_model(ex, record):
    _expect_model(
        ex,
        record,
        "a tf.keras.Model. End with `return model`, where "
        "model = tf.keras.Model(inputs, outputs) (step 10).",
    )
    return tu.rebuild_model(ex, record["model"])


def check_alpaca_model(record, image_shape=IMG_SIZE, augmenter=TEST_AUGMENTER):
    """Judge the record of alpaca_model(): layers, output shapes, ImageNet weights."""
    ex = "alpaca_model"
    image_shape = tuple(image_shape)
    model = _rebuild_alpaca_model(ex, record)
    augmenter_name = augmenter["name"]
    base_model = _base_model(ex, model)
    ops = model.operations
    expected = _expected_rows(image_shape, augmenter_name)
    got_kinds = [type(op).__name__ for op in ops]
    got = [(type(op).__name__, tu.output_shape(op, model), tu.describe(op)) for op in ops]

    index = tu.first_difference(expected, got, same=lambda e, g: e[:2] == g[:2])
    if index is None:
        # Same types and shapes: compare the details (Dropout rate, Dense units and activation).
        for i in (6, 7):
            if got[i][2] != expected[i][2]:
                index = i
                break
    if index is not None:
        headers = ("expected layer", "output shape", "got layer", "output shape")
        table = tu.render_table(
            headers, [(e[2], e[1]) for e in expected], [(g[2], g[1]) for g in got], mark=index
        )
        if index >= len(got):
            tu.fail(
                ex,
                f"the model has {len(got)} layers; expected {len(expected)}: layer "
                f"{index}, {expected[index][2]}, is missing. "
                + _layer_hint(index, expected, ops, got_kinds),
                table,
            )
        found, want = got[index], expected[index]
        if index == 7 and found[0] == "Dense":
            activation = tu.activation_name(ops[7])
            if activation and ops[7].units != 1:
                tu.fail(
                    ex,
                    f"layer 7 is {found[2]}; expected Dense(units=1) with no "
                    f"activation. Two classes need one logit, not one output per "
                    f"class, and the loss uses from_logits=True (step 9).",
                    table,
                )
            if activation:
                tu.fail(
                    ex,
                    f"layer 7 is {found[2]}; expected Dense(units=1) with no "
                    f"activation. The loss uses from_logits=True, so remove the "
                    f"activation argument (step 9).",
                    table,
                )
            tu.fail(
                ex,
                f"layer 7 is {found[2]}; expected Dense(units=1): one logit, positive "
                f"for 'not alpaca', negative for 'alpaca' (step 9).",
                table,
            )
        if index == 6 and found[0] == "Dropout":
            tu.fail(ex, f"layer 6 is {found[2]}; expected Dropout(rate=0.2) (step 8).", table)
        if found[0] == want[0]:
            what = f"has output shape {found[1]}; expected {want[1]}"
            if want[0] == "InputLayer":
                hint = (
                    "Build the input from the image_shape argument: "
                    "shape=image_shape + (3,), i.e. input_shape (step 3)."
                )
            else:
                hint = _layer_hint(index, expected, ops, got_kinds)
            tu.fail(ex, f"layer {index} ({found[2]}) {what}. {hint}", table)
        tu.fail(
            ex,
            f"layer {index} is {found[2]}; expected {want[2]}. "
            + _layer_hint(index, expected, ops, got_kinds),
            table,
        )

    if ops[1].name != augmenter_name:
        tu.fail(
            ex,
            f"layer 1 is a Sequential named {ops[1].name!r}, not the data_augmentation "
            f"passed to alpaca_model() (named {augmenter_name!r}). Apply the "
            f"argument; do not create a new augmenter (step 4).",
        )
    if ops[4].name != base_model.name:
        tu.fail(ex, f"layer 4 is {ops[4].name!r}; expected the MobileNetV2 base model (step 6).")

    input_shape = image_shape + (3,)
    base_input = tu.as_shape(base_model.input.shape)[1:]
    if base_input != input_shape:
        tu.fail(
            ex,
            f"the base model was built with input_shape={base_input}; expected "
            f"{input_shape}, i.e. image_shape + (3,). Pass input_shape=input_shape to "
            f"MobileNetV2() (step 1).",
        )
    if any(layer.name == "predictions" for layer in base_model.layers):
        tu.fail(
            ex,
            "the base model has its ImageNet classifier ('predictions' layer); "
            "expected include_top=False (step 1).",
        )
    _verify_mobilenet(ex, base_model, input_shape)
    _expect_imagenet_weights(ex, base_model)
    tu.passed(ex)


def check_frozen_base(record, image_shape=IMG_SIZE):
    """Judge the record of alpaca_model(): frozen base, training=False, one real training step."""
    ex = "alpaca_model (frozen base)"
    image_shape = tuple(image_shape)
    model = _rebuild_alpaca_model(ex, record)
    base_model = _base_model(ex, model)
    _verify_mobilenet(ex, base_model, image_shape + (3,))
    _expect_imagenet_weights(ex, base_model)

    if base_model.trainable:
        tu.fail(ex, "base_model.trainable is True; expected False. Freeze the base model (step 2).")
    unfrozen = [layer.name for layer in base_model.layers if layer.trainable]
    if unfrozen:
        tu.fail(
            ex,
            f"{len(unfrozen)} layers of the base model are trainable (first: "
            f"{unfrozen[0]!r}); expected none. Freeze the whole base model with "
            f"base_model.trainable = False (step 2).",
        )

    calls = tu.recorded_call_kwargs(base_model, model)
    if not calls or any(kwargs.get("training", None) is not False for kwargs in calls):
        found = calls[0].get("training") if calls else "no call"
        tu.fail(
            ex,
            f"the base model was called with training={found}; expected "
            f"training=False: write x = base_model(x, training=False) (step 6). "
            + _what_keras_does(
                tt.TRAINING_FALSE_KEEPS_BN,
                "training=False keeps the BatchNormalization layers of the base "
                "model in inference mode during fit()",
                "training=False does not keep the BatchNormalization layers of the "
                "base model in inference mode during fit() (base_model.trainable = False does)",
            ),
        )

    trainable, frozen = tu.parameter_counts(model)
    if (trainable, frozen) != (TRAINABLE_PARAMS, NON_TRAINABLE_PARAMS):
        tu.fail(
            ex,
            f"the model has {trainable:,} trainable and {frozen:,} non-trainable "
            f"parameters; expected {TRAINABLE_PARAMS:,} trainable (only "
            f"Dense(1) on 1,280 features) and {NON_TRAINABLE_PARAMS:,} "
            f"non-trainable (all of MobileNetV2). Check the layers after the base "
            f"model (steps 7 to 9): the test cell just above, "
            f"public_tests.alpaca_model_test(alpaca_model), lists them.",
        )

    # Behaviour: one real training step changes only the new classifier.
    tu.compile_for_test(model)
    statistics = tu.moving_statistics(base_model)
    weights = {v.path: keras.ops.convert_to_numpy(v).copy() for v in base_model.weights}
    dense = model.layers[-1]
    head = {v.path: keras.ops.convert_to_numpy(v).copy() for v in dense.weights}
    tu.run_check(ex, "one training step of the model", tu.fit_step, model, image_shape)
    moved = tu.changed(statistics, tu.moving_statistics(base_model))
    if moved:
        tu.fail(
            ex,
            f"after one training step, {len(moved)} BatchNormalization moving "
            f"statistics of the base model changed (first: {moved[0]}); expected "
            f"none. Freeze the base model (step 2).",
        )
    after = {v.path: keras.ops.convert_to_numpy(v) for v in base_model.weights}
    moved = tu.changed(weights, after)
    if moved:
        tu.fail(
            ex,
            f"after one training step, {len(moved)} weights of the base model "
            f"changed (first: {moved[0]}); expected none. Freeze the base model "
            f"(step 2).",
        )
    after = {v.path: keras.ops.convert_to_numpy(v) for v in dense.weights}
    if not tu.changed(head, after):
        tu.fail(
            ex,
            "after one training step, the last Dense layer did not change; expected "
            "it to train. Keep it trainable (step 9).",
        )
    tu.passed(ex)


# --------------------------------------------------------------------------
# Exercise 3
# --------------------------------------------------------------------------


def fine_tune_test(target, fine_tune_at=FINE_TUNE_AT, base_learning_rate=BASE_LEARNING_RATE):
    """Test Exercise 3: which layers train, and what one training step really changes."""
    record = produce_fine_tune(target, fine_tune_at, base_learning_rate)
    check_fine_tune(record, fine_tune_at, base_learning_rate)


def fine_tune_compile_test(
    target, fine_tune_at=FINE_TUNE_AT, base_learning_rate=BASE_LEARNING_RATE
):
    """Test Exercise 3: the model is recompiled with Adam(base_learning_rate / 10)."""
    record = produce_fine_tune(target, fine_tune_at, base_learning_rate)
    check_fine_tune_compile(record, base_learning_rate)


def produce_fine_tune(target, fine_tune_at=FINE_TUNE_AT, base_learning_rate=BASE_LEARNING_RATE):
    """Pass a frozen model, as fresh, to your fine_tune(); record the model afterwards."""
    model, _ = tu.handed_over_model(FINE_TUNE_IMAGE_SHAPE, base_learning_rate)
    optimizer = model.optimizer
    returned, error = tu.call_learner(target, model, fine_tune_at, base_learning_rate)
    if error:
        return {"error": error}
    compile_config = model.get_compile_config() if model.compiled else None
    return {
        "returned": tu.returned_record(returned),
        "same_model": returned is model,
        "new_optimizer": model.optimizer is not optimizer,
        # Its flags only: the check builds the model it handed over (_rebuild_fine_tuned).
        "model": tu.model_record(model, weights=False),
        "compile": json.loads(json.dumps(compile_config, default=str)),
    }


def _rebuild_fine_tuned(ex, record, base_learning_rate):
    """The model the test handed to fine_tune(), with the trainable flags fine_tune() left.

    The model is built here, as the test built it, not from the record: the record
    gives only what fine_tune() may change (the flags here, the compile settings in
    `check_fine_tune_compile`).
    """
    if "error" in record or record.get("same_model") is not True:
        _expect_model(ex, record, "the model passed in. End with `return model` (step 4).")
        tu.fail(
            ex,
            "returned another model; expected the model passed in, changed and "
            "recompiled (step 4).",
        )
    model, base_model = tu.handed_over_model(FINE_TUNE_IMAGE_SHAPE, base_learning_rate)
    recorded = record.get("model")
    if isinstance(recorded, dict) and "error" in recorded:
        tu.rebuild_model(ex, recorded)  # fails: the model could not be saved
    try:
        tu.set_trainable(model, recorded.get("trainable") if isinstance(recorded, dict) else None)
    except ValueError as error:
        tu.fail(
            ex,
            f"the model's trainable flags could not be read ({error}). Change only the "
            f"trainable flags of the model passed in, then recompile it (steps 1 to 3).",
        )
    return model, base_model


def check_fine_tune(record, fine_tune_at=FINE_TUNE_AT, base_learning_rate=BASE_LEARNING_RATE):
    """Judge the record of fine_tune(): trainable flags, then one real training step."""
    ex = "fine_tune"
    model, base_model = _rebuild_fine_tuned(ex, record, base_learning_rate)
    layers = base_model.layers

    if not base_model.trainable:
        tu.fail(
            ex,
            "base_model.trainable is still False after your fine_tune(); expected True. "
            "Write base_model.trainable = True first, then set the flag of each layer "
            "(step 1). "
            + _what_keras_does(
                tt.LAYER_TRAINS_IN_FROZEN_MODEL,
                "the layers you unfroze would train anyway, but base_model.trainable_weights "
                "would list none of them",
                "none of the layers you unfroze would train, whatever their own flag",
            ),
        )

    def expected_flag(index, layer):
        return index >= fine_tune_at and not tu.is_batch_norm(layer)

    expected = [(expected_flag(i, layer),) for i, layer in enumerate(layers)]
    got = [(bool(layer.trainable),) for layer in layers]
    index = tu.first_difference(expected, got)
    if index is not None:
        labels = [f"{i} {layer.name} ({type(layer).__name__})" for i, layer in enumerate(layers)]
        table = tu.render_table(
            ("expected trainable", "got trainable"),
            expected,
            got,
            labels=labels,
            mark=index,
            window=tu.TABLE_WINDOW,
        )
        wrong = [i for i in range(len(layers)) if expected[i] != got[i]]
        layer = layers[index]
        found = "trainable" if got[index][0] else "not trainable"
        want = "trainable" if expected[index][0] else "not trainable"
        where = (
            f"in the model the test gave your fine_tune(), layer {index} {layer.name!r} "
            f"of base_model is {found}; expected {want}"
        )
        before = [
            got[i][0]
            for i in range(min(fine_tune_at, len(layers)))
            if not tu.is_batch_norm(layers[i])
        ]
        after = [
            got[i][0] for i in range(fine_tune_at, len(layers)) if not tu.is_batch_norm(layers[i])
        ]
        if all(flag for (flag,) in got):
            hint = (
                "Every layer of base_model is trainable: setting base_model.trainable = "
                "True after the loop sets the flag of every layer again. Write "
                "base_model.trainable = True before the loop (step 1)."
            )
        elif before and all(before) and not any(after):
            hint = (
                "The layers before fine_tune_at are unfrozen and those after are frozen: "
                "the other way round. Unfreeze base_model.layers[fine_tune_at:] (step 1)."
            )
        elif tu.is_batch_norm(layer) and got[index][0]:
            hint = (
                "It is a BatchNormalization layer: keep every BatchNormalization layer "
                "not trainable, even after fine_tune_at (step 2)."
            )
        elif index in (fine_tune_at - 1, fine_tune_at) and len(wrong) == 1:
            hint = (
                f"Off by one: the first trainable layer is base_model.layers[fine_tune_at], "
                f"index {fine_tune_at} (step 1)."
            )
        elif index < fine_tune_at:
            hint = (
                "Every layer before fine_tune_at stays frozen: set layer.trainable = False "
                "on each of base_model.layers[:fine_tune_at] (step 1)."
            )
        else:
            hint = (
                "The layers from fine_tune_at on train, except BatchNormalization (steps 1 and 2)."
            )
        tu.fail(ex, f"{where} ({len(wrong)} layer(s) wrong in all). {hint}", table)

    # Behaviour: one real training step with the model as fine_tune() left it.
    tu.compile_for_test(model)
    statistics = tu.moving_statistics(base_model)
    kernels = tu.kernels(base_model)
    tu.run_check(
        ex, "one training step of the fine-tuned model", tu.fit_step, model, FINE_TUNE_IMAGE_SHAPE
    )
    moved = tu.changed(statistics, tu.moving_statistics(base_model))
    if moved:
        tu.fail(
            ex,
            f"after one training step, {len(moved)} BatchNormalization moving "
            f"statistics changed (first: {moved[0]}); expected none. Keep every "
            f"BatchNormalization layer not trainable (step 2).",
        )
    after = tu.kernels(base_model)
    for index, (name, kernel) in kernels.items():
        did_change = not (after[index][1] == kernel).all()
        if index < fine_tune_at and did_change:
            tu.fail(
                ex,
                f"after one training step, the kernel of layer {index} {name!r} "
                f"changed; expected it frozen, as it comes before fine_tune_at="
                f"{fine_tune_at} (step 1).",
            )
        if index >= fine_tune_at and not did_change:
            tu.fail(
                ex,
                f"after one training step, the kernel of layer {index} {name!r} did "
                f"not change; expected it to train, as it comes after fine_tune_at="
                f"{fine_tune_at}. Write base_model.trainable = True, then set the flag "
                f"of each layer (step 1).",
            )
    tu.passed(ex)


def check_fine_tune_compile(record, base_learning_rate=BASE_LEARNING_RATE):
    """Judge the record of fine_tune(): the optimizer, loss and metric it compiled with."""
    ex = "fine_tune (compile)"
    model, _ = _rebuild_fine_tuned(ex, record, base_learning_rate)
    expected_rate = base_learning_rate / 10

    if record.get("new_optimizer") is not True or not record.get("compile"):
        tu.fail(
            ex,
            f"the test gave your fine_tune() a model compiled with Adam(learning_rate="
            f"{base_learning_rate:g}), and after fine_tune() the model still has that "
            f"optimizer; expected a new one. Compile the model again inside fine_tune(), "
            f"after changing `trainable` (step 3).",
        )
    # The settings are read back from the model compiled with them, not from the record.
    try:
        config = tu.compile_from_record(model, record["compile"])
    except Exception as error:  # noqa: BLE001 -- settings Keras cannot read back
        text = (str(error).strip().splitlines() or [""])[0][: tu.MAX_MESSAGE]
        tu.fail(
            ex,
            f"the model's compile settings could not be applied again ({type(error).__name__}: "
            f"{text}). Compile with Keras's own optimizer, loss and metric (step 3).",
        )
    optimizer = _compiled(config.get("optimizer"))
    if optimizer["class_name"].lower() != "adam":
        tu.fail(ex, f"the optimizer is {optimizer['class_name']}; expected Adam (step 3).")
    rate = optimizer["config"].get("learning_rate", 0.001)  # "adam" alone has 0.001
    if not isinstance(rate, (int, float)):
        tu.fail(
            ex,
            "the learning rate is a schedule; expected the number "
            f"base_learning_rate / 10 = {expected_rate:g} (step 3).",
        )
    if not math.isclose(rate, expected_rate, rel_tol=LEARNING_RATE_RTOL):
        if math.isclose(rate, utils.BASE_LEARNING_RATE / 10, rel_tol=LEARNING_RATE_RTOL):
            hint = (
                "It looks written as a number: use base_learning_rate / 10, so that it "
                "follows the argument (step 3)."
            )
        else:
            hint = "Use learning_rate=base_learning_rate / 10 (step 3)."
        tu.fail(
            ex,
            f"the learning rate is {rate:.6g}; expected base_learning_rate / 10 = "
            f"{expected_rate:g} (base_learning_rate={base_learning_rate:g}). {hint}",
        )

    loss = _compiled(config.get("loss"))
    if loss["class_name"] != "BinaryCrossentropy":
        tu.fail(
            ex,
            f"the loss is {loss['class_name']!r}; expected "
            f"tf.keras.losses.BinaryCrossentropy(from_logits=True) (step 3).",
        )
    if not loss["config"].get("from_logits", False):
        tu.fail(
            ex,
            "the loss is BinaryCrossentropy with from_logits=False; expected "
            "from_logits=True: the model outputs logits, not probabilities (step 3).",
        )

    metrics = config.get("metrics") or []
    metrics = [_compiled(m) for m in (metrics if isinstance(metrics, list) else [metrics])]
    for metric in metrics:
        if metric["class_name"] == "BinaryAccuracy" and metric["config"].get("threshold") == 0:
            tu.passed(ex)
            return
    found = ", ".join(repr(m["text"]) for m in metrics) or "none"
    if any(m["class_name"].lower() in ACCURACY_NAMES + ("binaryaccuracy",) for m in metrics):
        tu.fail(
            ex,
            f"the metrics are {found}; expected tf.keras.metrics.BinaryAccuracy("
            f"threshold=0.0, name='accuracy'). The model outputs a logit: plain "
            f"'accuracy' says 'not alpaca' when the logit is above 0.5, that is a "
            f"probability above 0.62, not 0.5. A logit above 0 is a probability above "
            f"0.5 (step 3).",
        )
    tu.fail(
        ex,
        f"the metrics are {found}; expected "
        f"tf.keras.metrics.BinaryAccuracy(threshold=0.0, name='accuracy') (step 3).",
    )


def _compiled(entry):
    """Read one entry of a compile configuration: a name ("adam") or a Keras object's config."""
    if isinstance(entry, dict):
        config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        name = str(entry.get("class_name", ""))
        return {"class_name": name, "config": config, "text": config.get("name", name)}
    name = str(entry)
    known = {"adam": "Adam"}  # a loss given by name cannot say from_logits=True
    return {"class_name": known.get(name.lower(), name), "config": {}, "text": name}


# --------------------------------------------------------------------------
# Every test, as its two halves
# --------------------------------------------------------------------------

# {test: (produce, check)}. A test's keyword arguments go to the half that takes them.
TESTS = {
    "data_augmenter_test": (produce_data_augmenter, check_data_augmenter),
    "alpaca_model_test": (produce_alpaca_model, check_alpaca_model),
    "frozen_base_test": (produce_alpaca_model, check_frozen_base),
    "fine_tune_test": (produce_fine_tune, check_fine_tune),
    "fine_tune_compile_test": (produce_fine_tune, check_fine_tune_compile),
}


def inputs_for(half, inputs):
    """The keyword arguments of a test that one of its halves takes."""
    accepted = inspect.signature(half).parameters
    return {name: value for name, value in inputs.items() if name in accepted}
