"""Draws docs/lstm_cell.png: one LSTM step, as the kernels compute it.

    python docs/draw_lstm_cell.py
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402


def arrow(ax, start, end, color="black", style="-|>", lw=1.6):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, color=color, lw=lw))


def box(ax, xy, text, color, w=1.1, h=0.7):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
                                facecolor=color, edgecolor="black"))
    ax.text(x, y, text, ha="center", va="center", fontsize=13)


def node(ax, xy, text):
    ax.add_patch(plt.Circle(xy, 0.28, facecolor="white", edgecolor="black", lw=1.4))
    ax.text(*xy, text, ha="center", va="center", fontsize=14)


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 6))
    ax.set_xlim(-1, 12)
    ax.set_ylim(-1.6, 6.3)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((0.4, -0.6), 10.2, 6.0, boxstyle="round,pad=0.1",
                                facecolor="#f4f6fa", edgecolor="#9aa5b8"))

    # The cell state: a conveyor belt across the top, touched only by x and +.
    belt_y = 4.6
    arrow(ax, (-0.8, belt_y), (3.72, belt_y), color="#2b6cb0", lw=2.5)
    node(ax, (4.0, belt_y), "×")
    arrow(ax, (4.28, belt_y), (6.72, belt_y), color="#2b6cb0", lw=2.5)
    node(ax, (7.0, belt_y), "+")
    arrow(ax, (7.28, belt_y), (11.8, belt_y), color="#2b6cb0", lw=2.5)
    ax.text(-0.8, belt_y + 0.35, "$c_{t-1}$", fontsize=14, color="#2b6cb0")
    ax.text(11.2, belt_y + 0.35, "$c_t$", fontsize=14, color="#2b6cb0")
    ax.text(5.5, belt_y + 0.45, "cell state: $c_t = f \\odot c_{t-1} + i \\odot g$",
            ha="center", fontsize=12, color="#2b6cb0")

    # One GEMM gives all four gates' pre-activations.
    box(ax, (5.5, 0.0), "[$x_t$, $h_{t-1}$] @ [$W_{ih}$; $W_{hh}$]$^T$ + b   (one GEMM, 4H columns)",
        "#e2e8f0", w=7.6, h=0.6)
    ax.text(-0.9, 0.15, "$h_{t-1}$", fontsize=14)
    arrow(ax, (-0.9, 0.0), (1.6, 0.0))
    ax.text(5.5, -1.2, "$x_t$", fontsize=14, ha="center")
    arrow(ax, (5.5, -0.95), (5.5, -0.35))

    gates = [(4.0, "f", "σ", "forget"), (5.6, "i", "σ", "input"), (7.0, "g", "tanh", "candidate"),
             (8.6, "o", "σ", "output")]
    for x, name, act, what in gates:
        arrow(ax, (x, 0.35), (x, 1.35))
        box(ax, (x, 1.7), f"{act}", "#fde68a" if act == "σ" else "#fbcfe8", w=0.95, h=0.6)
        ax.text(x - 0.62, 1.62, f"${name}$", fontsize=13, ha="right")
        ax.text(x, 2.12, what, fontsize=9, ha="center", va="bottom", color="#555")
    arrow(ax, (4.0, 2.0), (4.0, belt_y - 0.28))             # f gates the old cell state
    node(ax, (6.3, 3.1), "×")                              # i * g
    arrow(ax, (5.6, 2.0), (6.05, 2.95))
    arrow(ax, (7.0, 2.0), (6.55, 2.95))
    arrow(ax, (6.45, 3.35), (6.85, belt_y - 0.26))

    # Output: h_t = o * tanh(c_t).
    arrow(ax, (9.6, belt_y), (9.6, 3.95))
    box(ax, (9.6, 3.6), "tanh", "#fbcfe8", w=0.95, h=0.55)
    node(ax, (9.6, 2.6), "×")
    arrow(ax, (9.6, 3.3), (9.6, 2.88))
    arrow(ax, (8.6, 2.0), (9.35, 2.45))
    arrow(ax, (9.88, 2.6), (11.8, 2.6))
    ax.text(11.0, 2.8, "$h_t = o \\odot \\tanh(c_t)$", fontsize=12)

    ax.text(5.5, 6.0, "One LSTM step (csrc/lstm_cell.h): the GEMM, then everything else fused in registers",
            ha="center", fontsize=12)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lstm_cell.png")
    fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
