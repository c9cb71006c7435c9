"""Draw the teaching diagrams of the notebook into images/.

    python -m tools.make_figures

Writes, with matplotlib only:

    images/inverted_residual_block.png   one inverted residual block (block_2)
    images/alpaca_model.png              the alpaca model: frozen MobileNetV2 + new head
    images/fine_tuning.png               which base layers fine-tuning unfreezes

The layer types in fine_tuning.png are read from a freshly built MobileNetV2
(weights=None, so nothing is downloaded). The output is deterministic: running the
script twice gives byte-identical PNG files.
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patches, transforms  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DPI = 100
FINE_TUNE_AT = 120  # same value as utils.FINE_TUNE_AT
INPUT_SHAPE = (160, 160, 3)

# Okabe-Ito palette (colour-blind friendly), one meaning per colour in all figures.
BLUE = "#0072B2"  # frozen
ORANGE = "#E69F00"  # trains
PURPLE = "#CC79A7"  # BatchNormalization kept frozen
PURPLE_TEXT = "#A0466F"  # a darker shade of PURPLE, for small text
SKY = "#56B4E9"  # narrow (bottleneck) tensors
GREEN = "#009E73"  # wide (expanded) tensors
VERMILLION = "#D55E00"  # shortcut
GREY = "#6E6E6E"
INK = "#222222"
SOFT = "#F2F2F2"  # layers without parameters


def tint(colour: str, amount: float) -> tuple[float, float, float]:
    """Mix `colour` with white: amount 0 keeps it, amount 1 gives white."""
    red, green, blue = matplotlib.colors.to_rgb(colour)
    return tuple(channel + (1.0 - channel) * amount for channel in (red, green, blue))


def setup_style() -> None:
    matplotlib.rcdefaults()
    plt.rcParams.update(
        {
            "font.family": "DejaVu Sans",
            "font.size": 10,
            "text.color": INK,
            "axes.edgecolor": INK,
            "axes.labelcolor": INK,
            "xtick.color": INK,
            "ytick.color": INK,
            "hatch.linewidth": 1.0,
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
            "path.simplify": False,
        }
    )


def canvas(width: float, height: float):
    """A figure whose data coordinates are inches, origin at the bottom left."""
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def save(fig, name: str) -> pathlib.Path:
    IMAGES.mkdir(exist_ok=True)
    path = IMAGES / name
    fig.savefig(path, dpi=DPI, facecolor="white", metadata={"Software": None})
    plt.close(fig)
    return path


def box(ax, x, y, width, height, face, edge, hatch=None, linewidth=1.4, radius=0.06):
    """A rounded box given by its centre (x, y)."""
    patch = patches.FancyBboxPatch(
        (x - width / 2, y - height / 2),
        width,
        height,
        boxstyle=f"round,pad=0,rounding_size={radius}",
        facecolor=face,
        edgecolor=edge,
        hatch=hatch,
        linewidth=linewidth,
        zorder=2,
    )
    ax.add_patch(patch)
    return patch


def arrow(ax, start, end, colour=GREY, linewidth=1.6, style="-|>", connection="arc3"):
    ax.add_patch(
        patches.FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=14,
            color=colour,
            linewidth=linewidth,
            connectionstyle=connection,
            shrinkA=0,
            shrinkB=0,
            zorder=1,
        )
    )


def padlock(ax, x, y, size, colour):
    """A small padlock whose body is centred on (x, y)."""
    body = patches.FancyBboxPatch(
        (x - size / 2, y - size * 0.4),
        size,
        size * 0.8,
        boxstyle=f"round,pad=0,rounding_size={size * 0.12}",
        facecolor=colour,
        edgecolor=colour,
        zorder=4,
    )
    shackle = patches.Arc(
        (x, y + size * 0.4),
        size * 0.66,
        size * 0.9,
        theta1=0,
        theta2=180,
        color=colour,
        linewidth=2.2,
        zorder=4,
    )
    for side in (-1, 1):
        ax.plot(
            [x + side * size * 0.33] * 2,
            [y + size * 0.4, y + size * 0.25],
            color=colour,
            linewidth=2.2,
            solid_capstyle="butt",
            zorder=4,
        )
    keyhole = patches.Circle((x, y + size * 0.02), size * 0.1, facecolor="white", zorder=5)
    ax.add_patch(body)
    ax.add_patch(shackle)
    ax.add_patch(keyhole)


# --------------------------------------------------------------------------------------
# 1. The inverted residual block
# --------------------------------------------------------------------------------------


def inverted_residual_block() -> pathlib.Path:
    width, height = 10.4, 7.2
    fig, ax = canvas(width, height)
    ax.text(
        width / 2,
        height - 0.35,
        "An inverted residual block (block_2 of MobileNetV2)",
        ha="center",
        va="center",
        fontsize=15,
        fontweight="bold",
    )
    ax.text(
        width / 2,
        height - 0.72,
        "Bar width \u221d number of channels: narrow \u2192 wide \u2192 wide \u2192 narrow",
        ha="center",
        va="center",
        fontsize=10,
        color=GREY,
        style="italic",
    )

    centre = 4.1
    unit = 0.038  # inches per channel
    bar_height = 0.42
    names_x = 8.25
    names_header_y = height - 1.1
    ax.text(
        names_x,
        names_header_y,
        "Keras layers",
        ha="left",
        va="center",
        fontsize=9,
        color=GREY,
        fontweight="bold",
    )

    # (label, channels, colour) of each tensor, top to bottom.
    tensors = [
        ("input  40\u00d740\u00d724", 24, SKY),
        ("40\u00d740\u00d7144", 144, GREEN),
        ("40\u00d740\u00d7144", 144, GREEN),
        ("40\u00d740\u00d724", 24, SKY),
        ("output  40\u00d740\u00d724", 24, SKY),
    ]
    # Operations between consecutive tensors: (main text, detail text, Keras names).
    operations = [
        (
            "1\u00d71 conv \u201cexpand\u201d \u00d76: 24 \u2192 144 channels",
            "+ BN + ReLU6",
            ["block_2_expand", "block_2_expand_BN", "block_2_expand_relu"],
        ),
        (
            "3\u00d73 depthwise conv: one filter per channel",
            "+ BN + ReLU6",
            ["block_2_depthwise", "block_2_depthwise_BN", "block_2_depthwise_relu"],
        ),
        (
            "1\u00d71 conv \u201cproject\u201d: 144 \u2192 24 channels",
            "+ BN, linear: no activation",
            ["block_2_project", "block_2_project_BN"],
        ),
    ]
    top = height - 1.5
    step = 1.2
    ys = [top - i * step for i in range(4)]
    add_y = ys[3] - 0.78
    ys.append(add_y - 0.78)

    for (label, channels, colour), y in zip(tensors, ys):
        bar_width = channels * unit
        box(ax, centre, y, bar_width, bar_height, tint(colour, 0.55), colour, radius=0.05)
        wide = channels > 24
        if wide:
            ax.text(centre, y, label, ha="center", va="center", fontsize=10.5, fontweight="bold")
        else:
            ax.text(centre, y, "24", ha="center", va="center", fontsize=10, fontweight="bold")
            ax.text(
                centre + bar_width / 2 + 0.15,
                y,
                label,
                ha="left",
                va="center",
                fontsize=10.5,
                fontweight="bold",
            )

    for index, (main, detail, names) in enumerate(operations):
        y_start = ys[index] - bar_height / 2
        y_end = ys[index + 1] + bar_height / 2
        arrow(ax, (centre, y_start - 0.03), (centre, y_end + 0.03))
        middle = (y_start + y_end) / 2
        ax.text(centre + 0.18, middle + 0.11, main, ha="left", va="center", fontsize=10.5)
        ax.text(
            centre + 0.18, middle - 0.15, detail, ha="left", va="center", fontsize=9.5, color=GREY
        )
        for line, name in enumerate(names):
            ax.text(
                names_x,
                middle + 0.17 - line * 0.19,
                name,
                ha="left",
                va="center",
                fontsize=8.5,
                family="DejaVu Sans Mono",
                color=GREY,
            )

    # The add node and the shortcut.
    radius = 0.2
    arrow(ax, (centre, ys[3] - bar_height / 2 - 0.03), (centre, add_y + radius + 0.02))
    ax.add_patch(
        patches.Circle(
            (centre, add_y),
            radius,
            facecolor="white",
            edgecolor=VERMILLION,
            linewidth=1.8,
            zorder=3,
        )
    )
    ax.text(
        centre,
        add_y - 0.01,
        "+",
        ha="center",
        va="center",
        fontsize=17,
        color=VERMILLION,
        fontweight="bold",
        zorder=4,
    )
    ax.text(
        centre + 0.32,
        add_y,
        "add the shortcut to the projection",
        ha="left",
        va="center",
        fontsize=10.5,
    )
    ax.text(
        names_x,
        add_y,
        "block_2_add",
        ha="left",
        va="center",
        fontsize=8.5,
        family="DejaVu Sans Mono",
        color=GREY,
    )
    arrow(ax, (centre, add_y - radius - 0.02), (centre, ys[4] + bar_height / 2 + 0.03))

    lane = 0.85
    input_left = centre - 24 * unit / 2
    ax.plot(
        [input_left - 0.03, lane, lane],
        [ys[0], ys[0], add_y],
        color=VERMILLION,
        linewidth=2.0,
        solid_joinstyle="round",
        zorder=1,
    )
    arrow(ax, (lane, add_y), (centre - radius - 0.02, add_y), colour=VERMILLION, linewidth=2.0)
    ax.text(
        lane - 0.14,
        (ys[0] + add_y) / 2,
        "shortcut (identity)",
        ha="center",
        va="center",
        rotation=90,
        fontsize=10,
        color=VERMILLION,
        fontweight="bold",
    )
    return save(fig, "inverted_residual_block.png")


# --------------------------------------------------------------------------------------
# 2. The alpaca model
# --------------------------------------------------------------------------------------


def alpaca_model() -> pathlib.Path:
    width, height = 10.5, 5.5
    fig, ax = canvas(width, height)
    ax.text(
        width / 2,
        height - 0.3,
        "The alpaca model: a frozen MobileNetV2 and a new classifier",
        ha="center",
        va="center",
        fontsize=15,
        fontweight="bold",
    )

    row1, row2 = 3.45, 1.2
    box_height = 0.95

    def stage(x, y, w, title, lines=(), face=SOFT, edge=GREY, hatch=None, h=box_height):
        box(ax, x, y, w, h, face, edge, hatch=hatch)
        n = len(lines)
        offset = 0.11 * n
        ax.text(
            x,
            y + offset,
            title,
            ha="center",
            va="center",
            fontsize=10.5,
            fontweight="bold",
            zorder=5,
        )
        for i, line in enumerate(lines):
            ax.text(
                x,
                y + offset - 0.25 * (i + 1),
                line,
                ha="center",
                va="center",
                fontsize=9.5,
                zorder=5,
            )
        return x - w / 2, x + w / 2

    def shape_label(x, y, text):
        ax.text(x, y + 0.14, text, ha="center", va="bottom", fontsize=8.5, color=GREY)

    # Row 1: input, augmentation, preprocessing, frozen base.
    x_input, w_input = 0.85, 1.2
    x_aug, w_aug = 2.95, 1.8
    x_pre, w_pre = 5.15, 1.75
    x_base, w_base, h_base = 8.45, 3.1, 1.75
    stage(x_input, row1, w_input, "Input", ["160\u00d7160\u00d73"])
    stage(x_aug, row1, w_aug, "data_augmentation", ["RandomFlip", "RandomRotation"])
    ax.text(
        x_aug,
        row1 - box_height / 2 - 0.18,
        "random in fit(), off in predict()",
        ha="center",
        va="center",
        fontsize=9,
        style="italic",
        color=GREY,
    )
    stage(x_pre, row1, w_pre, "preprocess_input", ["[0, 255] \u2192 [\u22121, 1]"])

    box(ax, x_base, row1, w_base, h_base, tint(BLUE, 0.82), BLUE, hatch="//", linewidth=1.8)
    label_face = {"facecolor": "white", "edgecolor": "none", "pad": 1.5}
    ax.text(
        x_base,
        row1 + 0.5,
        "MobileNetV2 base",
        ha="center",
        va="center",
        fontsize=12,
        fontweight="bold",
        zorder=5,
        bbox=label_face,
    )
    ax.text(
        x_base,
        row1 + 0.17,
        "154 layers, ImageNet weights",
        ha="center",
        va="center",
        fontsize=9.5,
        zorder=5,
        bbox=label_face,
    )
    ax.text(
        x_base,
        row1 - 0.14,
        "called with training=False",
        ha="center",
        va="center",
        fontsize=9.5,
        family="DejaVu Sans Mono",
        zorder=5,
        bbox=label_face,
    )
    ax.text(
        x_base,
        row1 - 0.5,
        "frozen: 2,257,984 parameters",
        ha="center",
        va="center",
        fontsize=10,
        color=BLUE,
        fontweight="bold",
        zorder=5,
        bbox=label_face,
    )
    padlock(ax, x_base - 1.15, row1 + h_base / 2 + 0.25, 0.22, BLUE)
    ax.text(
        x_base - 0.97,
        row1 + h_base / 2 + 0.22,
        "frozen: trainable = False",
        ha="left",
        va="center",
        fontsize=10.5,
        color=BLUE,
        fontweight="bold",
    )

    gap = 0.04
    for (x_a, w_a), (x_b, w_b) in [
        ((x_input, w_input), (x_aug, w_aug)),
        ((x_aug, w_aug), (x_pre, w_pre)),
        ((x_pre, w_pre), (x_base, w_base)),
    ]:
        arrow(ax, (x_a + w_a / 2 + gap, row1), (x_b - w_b / 2 - gap, row1))

    # Row 2: the new classifier head.
    x_gap, w_gap = 1.4, 2.3
    x_drop, w_drop = 4.1, 1.6
    x_dense, w_dense = 6.25, 1.2
    x_logit, w_logit = 8.8, 2.4
    stage(x_gap, row2, w_gap, "GlobalAveragePooling2D", ["5\u00d75\u00d71280 \u2192 1280 averages"])
    stage(x_drop, row2, w_drop, "Dropout(0.2)", ["only while training"])
    stage(
        x_dense, row2, w_dense, "Dense(1)", ["no activation"], face=tint(ORANGE, 0.6), edge=ORANGE
    )
    stage(
        x_logit, row2, w_logit, "logit", ["> 0: not alpaca", "< 0: alpaca"], face="white", edge=INK
    )
    for (x_a, w_a), (x_b, w_b), text in [
        ((x_gap, w_gap), (x_drop, w_drop), "1280"),
        ((x_drop, w_drop), (x_dense, w_dense), "1280"),
        ((x_dense, w_dense), (x_logit, w_logit), "1"),
    ]:
        start, end = x_a + w_a / 2 + gap, x_b - w_b / 2 - gap
        arrow(ax, (start, row2), (end, row2))
        shape_label((start + end) / 2, row2, text)
    ax.text(
        x_dense,
        row2 - box_height / 2 - 0.22,
        "trains: 1,281 parameters",
        ha="center",
        va="center",
        fontsize=10.5,
        color="#A86F00",
        fontweight="bold",
    )
    ax.text(
        x_dense,
        row2 - box_height / 2 - 0.45,
        "1280 weights + 1 bias",
        ha="center",
        va="center",
        fontsize=9,
        color=GREY,
    )

    # Wrap from the base down to the head.
    wrap_y = (row1 - h_base / 2 + row2 + box_height / 2) / 2
    ax.plot(
        [x_base, x_base, x_gap, x_gap],
        [row1 - h_base / 2 - gap, wrap_y, wrap_y, wrap_y],
        color=GREY,
        linewidth=1.6,
        solid_joinstyle="round",
        zorder=1,
    )
    arrow(ax, (x_gap, wrap_y), (x_gap, row2 + box_height / 2 + gap))
    ax.text(
        x_base + 0.1,
        (row1 - h_base / 2 + wrap_y) / 2,
        "5\u00d75\u00d71280",
        ha="left",
        va="center",
        fontsize=8.5,
        color=GREY,
    )

    # Legend, top left.
    legend_y = height - 0.82
    items = [
        (tint(BLUE, 0.82), BLUE, "//", "frozen (weights kept)"),
        (tint(ORANGE, 0.6), ORANGE, None, "trains"),
        (SOFT, GREY, None, "no parameters"),
    ]
    x = 0.25
    for face, edge, hatch, text in items:
        ax.add_patch(
            patches.Rectangle(
                (x, legend_y - 0.1),
                0.34,
                0.2,
                facecolor=face,
                edgecolor=edge,
                hatch=hatch,
                linewidth=1.2,
            )
        )
        ax.text(x + 0.45, legend_y, text, ha="left", va="center", fontsize=9.5)
        x += 0.45 + 0.075 * len(text) + 0.35
    return save(fig, "alpaca_model.png")


# --------------------------------------------------------------------------------------
# 3. Fine-tuning
# --------------------------------------------------------------------------------------


def base_model_layers() -> list[tuple[str, str, bool]]:
    """(name, class name, has weights) of each layer of MobileNetV2 without its top."""
    import keras

    model = keras.applications.MobileNetV2(input_shape=INPUT_SHAPE, include_top=False, weights=None)
    return [(layer.name, type(layer).__name__, bool(layer.weights)) for layer in model.layers]


def fine_tuning() -> tuple[pathlib.Path, dict]:
    layers = base_model_layers()
    count = len(layers)
    is_bn = [kind == "BatchNormalization" for _, kind, _ in layers]
    frozen = FINE_TUNE_AT
    bn_kept = sum(is_bn[FINE_TUNE_AT:])
    trainable = count - FINE_TUNE_AT - bn_kept
    weighted_kinds = [
        kind
        for index, (_, kind, has_weights) in enumerate(layers)
        if index >= FINE_TUNE_AT and kind != "BatchNormalization" and has_weights
    ]
    trainable_with_weights = len(weighted_kinds)
    weighted_names = " and ".join(sorted(set(weighted_kinds)))
    counts = {
        "layers": count,
        "frozen_before_fine_tune_at": frozen,
        "trainable": trainable,
        "batch_norm_kept_frozen": bn_kept,
        "trainable_with_weights": trainable_with_weights,
    }

    def colour_of(index):
        if index < FINE_TUNE_AT:
            return BLUE, None
        if is_bn[index]:
            return PURPLE, "////"
        return ORANGE, None

    def draw_layers(axis, indices, bar_width):
        """One bar per layer index, coloured by what fine-tuning does to the layer."""
        for index in indices:
            colour, hatch = colour_of(index)
            axis.add_patch(
                patches.Rectangle(
                    (index - bar_width / 2, 0),
                    bar_width,
                    1,
                    facecolor=colour,
                    edgecolor="white" if hatch else colour,
                    hatch=hatch,
                    linewidth=0.0,
                )
            )

    width, height = 10.5, 7.0
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    fig.text(
        0.5,
        1 - 0.32 / height,
        "Fine-tuning: unfreeze base_model.layers[120:], keep BatchNormalization frozen",
        ha="center",
        va="center",
        fontsize=14,
        fontweight="bold",
    )

    # Top strip: every layer of the base.
    left, right = 0.6 / width, 1 - 0.35 / width
    strip = fig.add_axes((left, 1 - 2.25 / height, right - left, 0.95 / height))
    draw_layers(strip, range(count), 0.84)
    strip.set_xlim(-1, count)
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    ticks = list(range(0, count, 20)) + [count - 1]
    strip.set_xticks(ticks)
    strip.tick_params(axis="x", labelsize=9, length=3)
    for side in ("left", "right", "top"):
        strip.spines[side].set_visible(False)
    strip.set_xlabel("layer index in base_model.layers", fontsize=9.5, labelpad=2)
    strip.axvline(
        FINE_TUNE_AT - 0.5,
        color=INK,
        linewidth=1.6,
        linestyle=(0, (4, 2)),
        ymin=0,
        ymax=1.38,
        clip_on=False,
    )
    strip.text(
        FINE_TUNE_AT - 0.5,
        1.45,
        f"fine_tune_at = {FINE_TUNE_AT}",
        ha="center",
        va="bottom",
        fontsize=10,
        fontweight="bold",
        transform=strip.transData,
        clip_on=False,
    )
    strip.text(
        (FINE_TUNE_AT - 1) / 2,
        1.16,
        f"{frozen} frozen layers (0\u2013{FINE_TUNE_AT - 1})",
        ha="center",
        va="bottom",
        fontsize=10.5,
        color=BLUE,
        fontweight="bold",
    )
    strip.text(
        (FINE_TUNE_AT + count - 1) / 2 + 0.5,
        1.16,
        f"{count - FINE_TUNE_AT} layers ({FINE_TUNE_AT}\u2013{count - 1})",
        ha="center",
        va="bottom",
        fontsize=10.5,
        fontweight="bold",
    )

    # Bottom: zoom on the layers from fine_tune_at on, with their names.
    zoom = fig.add_axes((left, 1 - 4.3 / height, right - left, 0.75 / height))
    tail = range(FINE_TUNE_AT, count)
    draw_layers(zoom, tail, 0.8)
    zoom.set_xlim(FINE_TUNE_AT - 0.6, count - 0.4)
    zoom.set_ylim(0, 1)
    zoom.set_yticks([])
    zoom.set_xticks(list(tail))
    zoom.set_xticklabels(
        [layers[index][0] for index in tail], rotation=90, fontsize=7.5, family="DejaVu Sans Mono"
    )
    for index, label in zip(tail, zoom.get_xticklabels()):
        label.set_color(PURPLE_TEXT if is_bn[index] else INK)
    zoom.tick_params(axis="x", length=2, pad=2)
    for side in ("left", "right", "top", "bottom"):
        zoom.spines[side].set_visible(False)
    zoom.text(
        count - 0.9,
        1.1,
        f"zoom on layers {FINE_TUNE_AT}\u2013{count - 1}",
        ha="right",
        va="bottom",
        fontsize=9.5,
        color=GREY,
        style="italic",
    )

    # Zoom guides from the strip to the zoom panel.
    below_label = transforms.blended_transform_factory(strip.transData, strip.transAxes)
    for strip_x, zoom_x in ((FINE_TUNE_AT - 0.5, FINE_TUNE_AT - 0.6), (count - 0.5, count - 0.4)):
        fig.add_artist(
            patches.ConnectionPatch(
                (strip_x, -0.52),
                (zoom_x, 1),
                coordsA=below_label,
                coordsB=zoom.transData,
                color=GREY,
                linewidth=0.8,
                linestyle=(0, (2, 2)),
            )
        )

    # Legend with the counts.
    legend = [
        (BLUE, None, f"frozen: index < {FINE_TUNE_AT}  ({frozen} layers)"),
        (
            ORANGE,
            None,
            f"trainable: index \u2265 {FINE_TUNE_AT}, not BatchNormalization  "
            f"({trainable} layers; {trainable_with_weights} of them, "
            f"{weighted_names}, have weights)",
        ),
        (
            PURPLE,
            "////",
            f"BatchNormalization from {FINE_TUNE_AT} on, kept frozen  ({bn_kept} layers)",
        ),
    ]
    y = 0.95
    for colour, hatch, text in legend:
        fig.add_artist(
            patches.Rectangle(
                (0.6 / width, (y - 0.09) / height),
                0.32 / width,
                0.18 / height,
                transform=fig.transFigure,
                facecolor=colour,
                edgecolor="white" if hatch else colour,
                hatch=hatch,
                linewidth=0.0,
            )
        )
        fig.text(1.05 / width, y / height, text, ha="left", va="center", fontsize=10)
        y -= 0.27
    return save(fig, "fine_tuning.png"), counts


def main() -> None:
    setup_style()
    paths = [inverted_residual_block(), alpaca_model()]
    path, counts = fine_tuning()
    paths.append(path)
    for path in paths:
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size:,} bytes")
    print("fine-tuning counts:", counts)


if __name__ == "__main__":
    main()
