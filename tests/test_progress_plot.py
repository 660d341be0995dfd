"""``progress.png`` of a pretraining run: the score axis shows what the log holds."""

from __future__ import annotations

from nnunet_slem.pretrain import progress


def _score_axis_limits(monkeypatch, tmp_path, train: list[float], held_out: list[float]) -> tuple[float, float]:
    captured = {}

    def keep(fig, path, dpi=100):
        captured["ylim"] = fig.axes[1].get_ylim()

    monkeypatch.setattr(progress, "save_figure_atomic", keep)
    log = {"epoch": list(range(len(train))), "loss": [1.0] * len(train), "train_acc": train, "eval_acc": held_out}
    progress.plot_progress(log, 0.0, tmp_path / "progress.png", metric="masked R2", title="MAEPretrain")
    return captured["ylim"]


def test_negative_scores_stay_on_the_axis(monkeypatch, tmp_path):
    """An MAE's first epochs score a negative R2 (worse than predicting the mean); the axis must show them."""
    low, high = _score_axis_limits(monkeypatch, tmp_path, [-0.65, 0.05, 0.2], [-0.15, 0.08, 0.2])
    assert low < -0.65 and high >= 1.0


def test_scores_in_0_1_keep_the_0_1_axis(monkeypatch, tmp_path):
    assert _score_axis_limits(monkeypatch, tmp_path, [0.1, 0.5], [0.2, float("nan")]) == (0.0, 1.02)
