# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: nbgrader,tags,-all
#     notebook_metadata_filter: kernelspec
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Transfer learning with MobileNetV2
#
# In this assignment you teach a network to tell **alpacas** from everything else,
# with only 327 photos. You do not train a network from scratch. You take
# MobileNetV2, a convolutional neural network (CNN) already trained on the 1.4 million
# photos of ImageNet, and reuse what it has learned. This is *transfer learning*.
#
# You will:
#
# 1. load the photos and augment them (**Exercise 1**);
# 2. put a new classifier on top of a frozen MobileNetV2 (**Exercise 2**);
# 3. find out what `trainable` and `training` really do, measured on your own Keras;
# 4. fine-tune the top of MobileNetV2 (**Exercise 3**);
# 5. look at the photos the model still gets wrong.
#
# Each exercise ends with a test cell. Run it after you finish the exercise: it
# tells you what is wrong and how to fix it.
#
# The whole notebook runs in about a minute on a laptop CPU; training takes
# about 30 seconds of that.

# %% [markdown]
# ## Packages
#
# Run this cell first. It imports TensorFlow, Keras and the helpers of this
# assignment, and finds the ImageNet weights of MobileNetV2 (see `README.md` if
# it cannot).
#
# Grading runs this cell and your answer cells only, not the lesson's other
# cells nor cells you add. So your answers may use the names this cell defines,
# such as `tf`, `tfl`, `preprocess_input` and `BASE_WEIGHTS`, and the functions
# of your other answers, nothing else.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import os

# Show TensorFlow's errors, not its information and warning logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib.pyplot as plt
import numpy as np

import utils

# Importing TensorFlow prints start-up notes (absl, oneDNN) straight to stderr.
# Hide those notes; any other message still shows.
with utils.tensorflow_startup_notes_hidden():
    import tensorflow as tf
import tensorflow.keras.layers as tfl

import public_tests
import trainable_training

print(f"TensorFlow {tf.__version__}, Keras {tf.keras.__version__}")

IMG_SIZE = utils.IMG_SIZE
BASE_LEARNING_RATE = utils.BASE_LEARNING_RATE
BASE_WEIGHTS = utils.mobilenet_weights(include_top=False)
preprocess_input = tf.keras.applications.mobilenet_v2.preprocess_input
tf.keras.utils.set_random_seed(utils.SEED)

# %% [markdown]
# ## The dataset
#
# The photos sit in two folders, `alpaca/` and `not alpaca/`. Keras reads them
# with `image_dataset_from_directory()`: it takes the class of each photo from
# its folder, resizes every photo to 160x160 pixels and groups them in batches of 32.
#
# It also keeps 20% of the photos apart for *validation*: the model never trains
# on them, so they show how well it works on photos it has not seen. The `seed`
# makes the split the same on every run: 262 photos for training and 65 for
# validation.
#
# `utils.load_datasets()` checks the folder first and then calls
# `image_dataset_from_directory()` twice, once for each part. Open `utils.py` to
# read it.
#
# No photos yet? `README.md` says where to get them, and how to use any two
# folders of photos instead. The three exercises and their test cells run
# without photos; the cells that show, train on or predict photos need them.

# %% nbgrader={"grade": false, "grade_id": "load_data", "locked": true, "schema_version": 3, "solution": false, "task": false}
train_dataset, validation_dataset = utils.load_datasets()
class_names = train_dataset.class_names
print("Classes:", class_names)
print("Training images:", sum(len(labels) for _, labels in train_dataset))
print("Validation images:", sum(len(labels) for _, labels in validation_dataset))

# %% [markdown]
# Here are nine training photos with their labels. Label 0 is `alpaca` and
# label 1 is `not alpaca`. A few labels in this dataset are wrong, as in most
# real datasets: you may meet them at the end.

# %%
utils.show_images(train_dataset, class_names)
plt.show()

# %% [markdown]
# ## Preprocess and augment the data
#
# Two things keep training fast:
#
# - `cache()` keeps the decoded photos in memory after the first epoch, so the
#   JPEG files are not read and decoded again on every epoch;
# - `prefetch()` prepares the next batch while the model trains on the current one.
#
# `utils.load_datasets()` already applies both.
#
# With only 262 training photos, the model can learn them by heart. *Data
# augmentation* fights this: each time the model sees a photo, the photo is
# flipped or rotated a little at random, so the model never sees exactly the
# same image twice. Keras does this with layers that change the images at
# random during `fit()` and leave them as they are during `predict()`.

# %% [markdown]
# ## Exercise 1 - `data_augmenter`
#
# Write `data_augmenter()`. It returns a `tf.keras.Sequential` model with exactly
# two layers, in this order:
#
# 1. `RandomFlip('horizontal')`: flip left-right at random (an upside-down
#    alpaca is not a photo you will meet);
# 2. `RandomRotation(0.2)`: rotate at random by up to 20% of a full turn.
#
# You can build the `Sequential` from a list of layers, or start empty and call
# `.add()` for each layer. The layers live in `tfl` (short for
# `tensorflow.keras.layers`), for example `tfl.RandomFlip`.

# %% nbgrader={"grade": false, "grade_id": "data_augmenter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def data_augmenter():
    """Return a Sequential model of RandomFlip('horizontal') then RandomRotation(0.2)."""
    ### BEGIN SOLUTION
    data_augmentation = tf.keras.Sequential()
    data_augmentation.add(tfl.RandomFlip("horizontal"))
    data_augmentation.add(tfl.RandomRotation(0.2))
    ### END SOLUTION
    return data_augmentation


# %% nbgrader={"grade": true, "grade_id": "data_augmenter_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
public_tests.data_augmenter_test(data_augmenter)
### BEGIN HIDDEN TESTS
public_tests.data_augmenter_test(data_augmenter, image_shape=(96, 128))
### END HIDDEN TESTS

# %% [markdown]
# Here is one training photo passed nine times through your augmenter. Each
# pass gives a different image.

# %%
data_augmentation = data_augmenter()
first_image = next(iter(train_dataset))[0][0]
utils.show_augmented(first_image, data_augmentation)
plt.show()

# %% [markdown]
# ## MobileNetV2, pretrained on ImageNet
#
# MobileNetV2 is built to run fast on phones. Its 154 layers are grouped in 16
# *inverted residual blocks*. Each block:
#
# 1. *expands* the input to six times more channels with a 1x1 convolution;
# 2. filters each channel on its own with a cheap 3x3 *depthwise* convolution;
# 3. *projects* back down to a few channels with another 1x1 convolution;
# 4. adds its input to its output (a *shortcut*) when both have the same shape.
#
# ![An inverted residual block of MobileNetV2](images/inverted_residual_block.png)
#
# Every convolution is followed by *batch normalization* (BN), which rescales its
# output with statistics learned on ImageNet. Remember BN: it matters later.
#
# First, load MobileNetV2 *with* its ImageNet classifier (its "top") and look
# inside one block.

# %%
imagenet_model = tf.keras.applications.MobileNetV2(
    input_shape=IMG_SIZE + (3,),
    include_top=True,
    weights=utils.mobilenet_weights(include_top=True),
)
print("Layers in MobileNetV2 with its top:", len(imagenet_model.layers))
for layer in imagenet_model.layers:
    if layer.name.startswith("block_2_"):
        print(f"{layer.name:24} {type(layer).__name__:22} {layer.output.shape}")

# %% [markdown]
# `block_2` expands 24 channels to 144, filters them, projects them back to 24
# and adds the shortcut (`block_2_add`).
#
# The ImageNet classifier knows 1,000 classes, but not "alpaca". What does it
# say about our photos? Its input must be *preprocessed* first:
# `preprocess_input()` (defined in the first cell, from
# `tf.keras.applications.mobilenet_v2`) scales pixels from [0, 255] to [-1, 1], the range
# MobileNetV2 was trained on.

# %%
images, labels = next(iter(train_dataset))
probabilities = imagenet_model.predict(preprocess_input(images), verbose=0)
for label, top3 in list(zip(labels, utils.decode_predictions(probabilities, top=3)))[:12]:
    guesses = ", ".join(f"{name} {probability:.2f}" for name, probability in top3)
    print(f"{class_names[int(label)]:>10}: {guesses}")

# %% [markdown]
# Most alpacas come out as `llama`, their closest relative among the 1,000
# classes. The network already "sees" alpacas. It only needs a new last layer
# that answers our question: alpaca or not?

# %% [markdown]
# ## Exercise 2 - `alpaca_model`
#
# Build the model in the picture. The MobileNetV2 part keeps its ImageNet
# weights and is *frozen*: training only changes the new layers on top.
#
# ![The alpaca model: a frozen MobileNetV2 with a new classifier](images/alpaca_model.png)
#
# Write `alpaca_model(image_shape, data_augmentation)`:
#
# 1. Create the base model with `tf.keras.applications.MobileNetV2()`:
#    `input_shape=input_shape`, `include_top=False` (no ImageNet classifier) and
#    `weights=BASE_WEIGHTS` (the ImageNet weights found in the first cell).
# 2. Freeze it: `base_model.trainable = False`.
# 3. Create the input layer with `tf.keras.Input(shape=input_shape)`.
# 4. Apply `data_augmentation` (the argument; do not create a new one).
# 5. Apply `preprocess_input()`.
# 6. Call the base model with `training=False`. The section after this exercise
#    explains why.
# 7. Add `tfl.GlobalAveragePooling2D()`, which averages each of the 1,280 feature
#    maps to one number.
# 8. Add `tfl.Dropout(0.2)`.
# 9. Add `tfl.Dense(1)` with **no activation**: the model outputs a *logit*, a
#    score that is positive for "not alpaca" and negative for "alpaca". The loss
#    turns it into a probability itself (`from_logits=True`).
# 10. Return `tf.keras.Model(inputs, outputs)`.
#
# Use the Functional API: call each layer on the output of the one before, as in
# `x = tfl.Dropout(0.2)(x)`.

# %% nbgrader={"grade": false, "grade_id": "alpaca_model", "locked": false, "schema_version": 3, "solution": true, "task": false}
def alpaca_model(image_shape=IMG_SIZE, data_augmentation=None):
    """Return a binary classifier built on a frozen MobileNetV2.

    image_shape -- (height, width) of the input images
    data_augmentation -- the augmentation model; data_augmenter() when None
    """
    if data_augmentation is None:
        data_augmentation = data_augmenter()
    input_shape = image_shape + (3,)
    ### BEGIN SOLUTION
    # Load the base model without its classifier, with ImageNet weights.
    base_model = tf.keras.applications.MobileNetV2(
        input_shape=input_shape, include_top=False, weights=BASE_WEIGHTS
    )
    # Freeze the base model.
    base_model.trainable = False

    inputs = tf.keras.Input(shape=input_shape)
    x = data_augmentation(inputs)
    x = preprocess_input(x)
    # Keep the base model in inference mode.
    x = base_model(x, training=False)
    x = tfl.GlobalAveragePooling2D()(x)
    x = tfl.Dropout(0.2)(x)
    outputs = tfl.Dense(1)(x)
    model = tf.keras.Model(inputs, outputs)
    ### END SOLUTION
    return model


# %% [markdown]
# Two test cells check your model: the first checks its layers, the second that
# the base model is really frozen.

# %% nbgrader={"grade": true, "grade_id": "alpaca_model_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
public_tests.alpaca_model_test(alpaca_model)
### BEGIN HIDDEN TESTS
public_tests.alpaca_model_test(
    alpaca_model,
    image_shape=(128, 128),
    augmenter={"name": "hidden_augmenter", "layers": [["RandomContrast", {"factor": 0.1}]]},
)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "frozen_base_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
public_tests.frozen_base_test(alpaca_model)
### BEGIN HIDDEN TESTS
# The inputs of the hidden alpaca_model_test: one model, built once, judged by both tests.
public_tests.frozen_base_test(
    alpaca_model,
    image_shape=(128, 128),
    augmenter={"name": "hidden_augmenter", "layers": [["RandomContrast", {"factor": 0.1}]]},
)
### END HIDDEN TESTS

# %% [markdown]
# Now build the model and compile it. The loss is binary cross-entropy computed
# from logits, and the optimizer is Adam with a learning rate of 0.001.
#
# The metric is accuracy, read on the logit. A logit of 0 is a probability of
# 0.5, so `BinaryAccuracy(threshold=0.0)` counts a photo as "not alpaca" when its
# probability is above 0.5. The shortcut `metrics=["accuracy"]` would compare
# the logit with 0.5, which is a probability of 0.62, and count some right
# answers as wrong.
#
# Training is random: the order of the photos, the augmentation and the dropout.
# Seeding the random generators first makes every run of this notebook give the
# same curves.

# %% nbgrader={"grade": false, "grade_id": "compile_model", "locked": true, "schema_version": 3, "solution": false, "task": false}
tf.keras.utils.set_random_seed(utils.SEED)
model2 = alpaca_model(IMG_SIZE, data_augmenter())
model2.compile(
    optimizer=tf.keras.optimizers.Adam(learning_rate=BASE_LEARNING_RATE),
    loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
    metrics=[tf.keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
)
model2.summary()

# %% [markdown]
# Train the new classifier for 5 epochs. This takes about 15 seconds. Expect a
# validation accuracy between 0.8 and 0.9: the frozen base already gives good features.

# %% nbgrader={"grade": false, "grade_id": "train_frozen", "locked": true, "schema_version": 3, "solution": false, "task": false}
initial_epochs = utils.epochs(5)
history = model2.fit(train_dataset, validation_data=validation_dataset, epochs=initial_epochs)

# %%
utils.plot_history(history)
plt.show()

# %% [markdown]
# ## `trainable` and `training`: two different switches
#
# Your `alpaca_model()` says two things about the base model:
#
# ```python
# base_model.trainable = False
# x = base_model(x, training=False)
# ```
#
# They look alike, but they are two different switches:
#
# - `trainable` is an attribute of a layer. It says whether `fit()` may change
#   the layer's weights.
# - `training` is an argument of a call. It says whether the layer behaves as
#   in training or as in inference (prediction).
#
# Most layers behave the same in both modes. Two layers of your model do not:
#
# - BN, in training mode, normalizes each batch with the mean and variance of
#   that batch, and updates its *moving* mean and variance, running averages
#   kept for inference. In inference mode it uses the moving mean and variance,
#   and changes nothing.
# - Dropout, in training mode, sets a random 20% of its inputs to zero. In
#   inference mode it does nothing.
#
# How do the two switches combine? Do not guess: measure.
# `trainable_training.probe()` (open `trainable_training.py` to read it) builds
# tiny models as in the assignment,
# `x = base_model(inputs, training=...)`, with one BN or one Dropout layer in
# the base model. For each value of `trainable` and `training` it runs one step
# of `fit()` and one `predict()`, and records what happened. Its last lines
# measure `trainable` on layers inside a model, for Exercise 3. It takes about 5
# seconds.

# %%
probe = trainable_training.probe()
print(trainable_training.format_table(probe))

# %% [markdown]
# ### What `trainable = False` does
#
# Read the rows where `trainable` is `False`. BN normalizes with its moving
# statistics and nothing changes: not the moving statistics, not gamma and beta
# (the scale and shift it learns). This holds in `fit()` and `predict()`, and
# whatever `training` says. BN uses batch statistics only when `training` and
# `trainable` are both true.
#
# So `base_model.trainable = False` is enough to keep MobileNetV2 exactly as
# ImageNet trained it, BN included, on every Keras version of the table below.
#
# ### What `training=False` does
#
# Read the rows where `trainable` is `True` and `training` is `False`, during
# `fit()`. What you see depends on your Keras version:
#
# - **Keras 3.0 to 3.15**: `fit()` calls the model with `training=True`, and this
#   replaces the value written when the model was built. `base_model(x,
#   training=False)` has no effect during `fit()`: BN uses batch statistics and
#   updates its moving statistics.
# - **Keras 3.16 and later**, and **Keras 2** (the `tf-keras` package, which most
#   older tutorials and forum answers were written for): the value written when
#   the model was built is kept (keras-team/keras pull request #23364 brought this
#   back to Keras 3). BN stays in inference mode, but its gamma and beta still
#   train, because `trainable` is `True`.
#
# Dropout has no weights, so `trainable` changes nothing for it. It drops in
# `fit()` and not in `predict()`; on Keras 3.0 to 3.15, `training=False` does not
# turn it off during `fit()` (on Keras 2 and 3.16 and later, it does).
#
# Data augmentation layers work the other way round on Keras 3: they are active
# unless told otherwise. A plain call such as `model2(images)` flips and rotates the images.
# `model2.predict(images)` and `model2(images, training=False)` do not.

# %% [markdown]
# ### Why the assignment uses both
#
# - `base_model.trainable = False` freezes the base model now, for the first
#   training, on every version.
# - `training=False` is meant for later, when you unfreeze the base model to
#   fine-tune it. MobileNetV2's BN layers hold statistics of 1.4 million ImageNet
#   photos. Batches of 32 alpaca photos give noisy statistics, which would shift
#   the inputs of every layer above them. `training=False` should keep BN on its
#   ImageNet statistics.
#
# On Keras 3.0 to 3.15 it does not. If you unfreeze MobileNetV2 from layer 120
# on, the 12 BN layers from layer 120 on switch to batch statistics and start
# updating their moving statistics, with or without `training=False`. So
# Exercise 3 also sets `trainable = False` on every BN layer: this keeps BN in
# inference mode on every version.
#
# ### `trainable` on a model and on its layers
#
# In Exercise 3 you set `trainable` on the base model and on each of its layers.
# The last lines of the table above measure how the two flags combine, on a
# `Sequential` of two `Dense` layers inside a model:
#
# - A layer with `trainable = True` inside a model with `trainable = False`:
#   Keras 3 trains it, Keras 2 does not. Making the model trainable first, then
#   setting the flag of each layer, works on both.
# - `model.trainable = True` when it is already `True`: on Keras 3 it does
#   nothing, so the layers you froze one by one stay frozen; on Keras 2 it
#   unfreezes them all. So set the model's flag first and the layers' flags after.
# - A change of `trainable` after `fit()` counts only once the model is compiled
#   again, on every version.

# %% [markdown]
# ### The claims, checked on your Keras
#
# Here is everything this section claims. The column "Keras 2" was measured on
# `tf-keras` 2.21 (the Keras 2 of TensorFlow 2.21), the column "Keras 3.0 to
# 3.15" on Keras 3.15.1 and the column "Keras 3.16 and later" on the development
# version 3.16, each with the probe above.
#
# | Question | Keras 2 | Keras 3.0 to 3.15 | Keras 3.16 and later |
# |---|---|---|---|
# | Does `trainable = False` put BN in inference mode during `fit()`? | yes | yes | yes |
# | Does `trainable = False` freeze BN's moving statistics, gamma and beta? | yes | yes | yes |
# | Does `training=False` keep BN in inference mode during `fit()`? | yes | no | yes |
# | Does `training=False` stop BN's gamma and beta from training? | no | no | no |
# | Does `trainable` change what Dropout does? | no | no | no |
# | Does `training=False` turn Dropout off during `fit()`? | yes | no | yes |
# | Does a layer with `trainable = True` train inside a model with `trainable = False`? | no | yes | yes |
# | Does `model.trainable = True` unfreeze layers frozen one by one, when it is already `True`? | yes | no | no |
# | Does a change of `trainable` after `fit()` count without `compile()` again? | no | no | no |
#
# The next cell answers each question from the table you measured above, and
# says which column applies to your Keras.

# %%
print(trainable_training.format_claims(probe))

# %% [markdown]
# ## Exercise 3 - `fine_tune`
#
# The classifier on top has learned what it can from MobileNetV2's features.
# To go further, *fine-tune*: let the last layers of MobileNetV2 adapt to
# alpacas too, with a small learning rate so that they change only a little.
#
# The first layers of a CNN detect edges and textures, which are useful for any
# photo, so they stay frozen. The last layers detect whole shapes, closer to
# "llama" or "window screen", so those are the ones to retrain.
#
# ![Fine-tuning: layers from fine_tune_at on are unfrozen, except BatchNormalization](images/fine_tuning.png)
#
# Write `fine_tune(model, fine_tune_at, base_learning_rate)`. The first line,
# already written, finds the MobileNetV2 layer inside `model`. Then:
#
# 1. First write `base_model.trainable = True`: on Keras 2, a layer inside a
#    model with `trainable = False` never trains, whatever its own flag. Then set
#    `layer.trainable` on *each* layer of `base_model`: `True` for the layers with
#    an index **from `fine_tune_at` on** (`base_model.layers[fine_tune_at:]`),
#    `False` for every layer before `fine_tune_at`. Set each flag, not only the
#    ones that change: then running the cell twice gives the same model.
# 2. Keep every `BatchNormalization` layer not trainable, even after
#    `fine_tune_at`. Find them with `isinstance(layer, tfl.BatchNormalization)`.
#    (The section above shows why.)
# 3. Compile `model` again, or the change of `trainable` does not count in the
#    next `fit()`: Adam with a learning rate of `base_learning_rate / 10`, the same
#    `BinaryCrossentropy(from_logits=True)` loss and the same metric as before,
#    `tf.keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")` (not the
#    string `"accuracy"`, which reads the logit at 0.5).
# 4. Return `model`.

# %% nbgrader={"grade": false, "grade_id": "fine_tune", "locked": false, "schema_version": 3, "solution": true, "task": false}
def fine_tune(model, fine_tune_at=utils.FINE_TUNE_AT, base_learning_rate=BASE_LEARNING_RATE):
    """Unfreeze base_model.layers[fine_tune_at:] except BatchNormalization, then recompile."""
    base_model = utils.get_base_model(model)
    ### BEGIN SOLUTION
    base_model.trainable = True
    for index, layer in enumerate(base_model.layers):
        is_batch_norm = isinstance(layer, tfl.BatchNormalization)
        layer.trainable = index >= fine_tune_at and not is_batch_norm

    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=base_learning_rate / 10),
        loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
    )
    ### END SOLUTION
    return model


# %% [markdown]
# Again two test cells: the first checks which layers train, and what one
# training step really changes; the second checks the compile step.

# %% nbgrader={"grade": true, "grade_id": "fine_tune_test", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
public_tests.fine_tune_test(fine_tune)
### BEGIN HIDDEN TESTS
public_tests.fine_tune_test(fine_tune, fine_tune_at=100, base_learning_rate=0.01)
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "fine_tune_compile_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
public_tests.fine_tune_compile_test(fine_tune)
### BEGIN HIDDEN TESTS
# The inputs of the hidden fine_tune_test: one call of fine_tune(), judged by both tests.
public_tests.fine_tune_compile_test(fine_tune, fine_tune_at=100, base_learning_rate=0.01)
### END HIDDEN TESTS

# %% [markdown]
# Fine-tune `model2` from layer 120 on, and continue training up to epoch 10.
# With more of the network training, each epoch takes a little longer.
# Expect the validation accuracy to wobble for an epoch or two, then to end
# above 0.9. With 65 validation photos, one photo is 1.5 points of accuracy.

# %% nbgrader={"grade": false, "grade_id": "train_fine_tune", "locked": true, "schema_version": 3, "solution": false, "task": false}
model2 = fine_tune(model2, fine_tune_at=utils.FINE_TUNE_AT, base_learning_rate=BASE_LEARNING_RATE)
base_model = utils.get_base_model(model2)
print("Trainable layers in the base model:", sum(layer.trainable for layer in base_model.layers))

total_epochs = initial_epochs + utils.epochs(5)
history_fine = model2.fit(
    train_dataset,
    validation_data=validation_dataset,
    epochs=total_epochs,
    initial_epoch=len(history.epoch),
)

# %%
utils.plot_history(history, history_fine, marker_epoch=initial_epochs)
plt.show()

# %% [markdown]
# ## Optional experiment: fine-tuning with BN frozen or not
#
# What happens if BN is left trainable during fine-tuning? This experiment
# builds two fresh models (it does not touch `model2`), trains their classifier
# for 2 epochs, then fine-tunes each for 3 epochs from layer 120 on:
#
# - one with your `fine_tune()`, BN frozen;
# - one with BN left trainable, as `base_model.trainable = True` alone would do.
#
# The plot shows both validation curves, and how much the moving variance of the
# last BN layer of MobileNetV2 (`Conv_1_bn`) changes after each batch.
#
# With BN frozen, the moving variance stays at its ImageNet value. With BN
# trainable, on Keras 3.0 to 3.15, it drifts (slowly: MobileNetV2's BN momentum
# is 0.999), and the layers above it learn on batch statistics that `predict()`
# never uses. With only 65 validation photos the curves are noisy: run the
# experiment twice before you draw a conclusion.
#
# It takes about 90 seconds, so it is off by default. Set `RUN_BN_EXPERIMENT =
# True` to run it.

# %%
RUN_BN_EXPERIMENT = False

if RUN_BN_EXPERIMENT and not utils.autograding():
    bn_results = trainable_training.bn_experiment(
        lambda: alpaca_model(IMG_SIZE, data_augmenter()),
        fine_tune,
        train_dataset,
        validation_dataset,
    )
    trainable_training.plot_bn_experiment(bn_results)
    plt.show()
else:
    print("Skipped. Set RUN_BN_EXPERIMENT = True to run it (about 90 seconds).")

# %% [markdown]
# ## Which photos does the model get wrong?
#
# Accuracy is one number. A *confusion matrix* shows which mistakes the model
# makes: each row is the true class, each column the predicted class, and the
# right answers are on the diagonal.

# %%
val_images, val_labels, val_probabilities = utils.predict_dataset(model2, validation_dataset)
utils.plot_confusion_matrix(val_labels, val_probabilities, class_names)
plt.show()

# %% [markdown]
# Here are the misclassified validation photos. The number above each one is the
# probability the model gives to "not alpaca": above 0.5, it says "not alpaca".
# Some of them are mislabelled photos, not mistakes of the model.

# %%
utils.show_misclassified(val_images, val_labels, val_probabilities, class_names)
plt.show()

# %% [markdown]
# ## What you should remember
#
# With 262 photos and about a minute of training on a CPU, you built a classifier
# that is right about nine times out of ten.
#
# - A network pretrained on a large dataset, frozen, gives good features for a
#   new task: train only a new classifier on top of it.
# - Data augmentation layers change the photos during `fit()` only, never in
#   `predict()`: a small dataset goes further.
# - `trainable = False` freezes a layer's weights and, for BatchNormalization,
#   keeps it in inference mode, on every Keras version.
# - To fine-tune, make the base model trainable, unfreeze its last layers one
#   by one, keep BatchNormalization frozen, and compile again with a smaller
#   learning rate.
# - `training=False` is a different switch, and what it does during `fit()`
#   depends on your Keras version: measure it, do not guess.
