"""``progress.png`` of a pretraining run: loss and pretext score per epoch, chance level for reference."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nnunet_slem.atomic import save_figure_atomic  # noqa: E402


def plot_progress(log: dict[str, list], chance: float | None, path: Path, audit_accuracy: float | None = None,
                  metric: str = "accuracy", title: str = "SLeM pretraining") -> None:
    """Two panels; the score panel also shows chance (if defined) and the shortcut audit's accuracy (if it ran).
    Its axis spans 0-1 and extends below 0 for scores that go negative (an R2 worse than predicting the mean)."""
    epochs = [e + 1 for e in log["epoch"]]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, log["loss"], "b-o", ms=3, label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("pretext loss")
    ax_loss.legend()
    ax_acc.plot(epochs, log["train_acc"], "g-o", ms=3, label=f"train {metric}")
    ax_acc.plot(epochs, log["eval_acc"], "r-o", ms=3, label=f"held-out {metric}")
    if chance is not None:
        ax_acc.axhline(chance, color="gray", ls="--", label=f"chance ({chance:.3f})")
    if audit_accuracy is not None:
        ax_acc.axhline(audit_accuracy, color="orange", ls=":",
                       label=f"histogram-classifier audit ({audit_accuracy:.3f})")
    finite = [v for v in (*log["train_acc"], *log["eval_acc"]) if v == v]  # NaN-free
    ax_acc.set_ylim(min(0.0, *finite) - (0.02 if finite and min(finite) < 0 else 0.0), 1.02)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel(f"pretext {metric}")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
