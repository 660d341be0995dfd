"""Probes of a trained pretext network: hand-made 'networks' that cheat one way must fail that way's probe."""

from __future__ import annotations

import json

import pytest
import torch

from nnunet_slem.pretext import SLeMPretext, SLeMPretextConfig
from nnunet_slem.pretext.audit import seam_features
from nnunet_slem.pretrain.probes import ProbeResult, run_probes
from tests.test_pretext_audit import smooth_fields
from tests.test_pretext_slem import skull_stripped

SHAPE = (16, 16, 16)
M = 3
FIXED = {"random_unsplit_axis": False, "jitter": 0.0}  # the cheaters know where the seams are


def seam_cheater(pretext: SLeMPretext):
    """Reads only continuity across the seams: class k expects channel c of block a to continue channel c' of
    its neighbour b wherever A[k][a][c] == A[k][b][c']."""
    layout = pretext.sample_layouts(SHAPE, 1)[0]
    pairs = [(a, b) for a in range(pretext.num_blocks) for b in range(pretext.num_blocks)
             if a < b and sum(x != y for x, y in zip(_grid_index(layout, a), _grid_index(layout, b))) == 1]
    a_idx = torch.tensor([a for a, _ in pairs])
    b_idx = torch.tensor([b for _, b in pairs])
    table = pretext.assignments  # (K, B, M)
    expected = (table[:, a_idx, :, None] == table[:, b_idx, None, :]).float()  # (K, P, M, M)

    def classify(images: torch.Tensor) -> torch.Tensor:
        corr = seam_features(images, [layout] * len(images)).reshape(len(images), len(pairs), M, M, 2)[..., 0]
        return torch.einsum("npcd,kpcd->nk", corr, expected)

    return classify


def _grid_index(layout, block: int) -> tuple[int, ...]:
    index = []
    for parts in reversed(layout.parts):
        index.append(block % parts)
        block //= parts
    return tuple(reversed(index))


def background_cheater(pretext: SLeMPretext, calibration: torch.Tensor):
    """Reads only the background tie: per block and channel the most frequent value (the background's shared
    rank under whole-block ranks), compared with each modality's typical value from unshuffled samples."""
    layout = pretext.sample_layouts(SHAPE, 1)[0]
    slices = layout.block_slices()

    def tie_values(images: torch.Tensor) -> torch.Tensor:  # (N, B, M)
        return torch.stack([images[(slice(None), slice(None), *sl)].flatten(2).mode(dim=2).values
                            for sl in slices], dim=1)

    identity = pretext.apply(calibration, torch.zeros(len(calibration), dtype=torch.long),
                             [layout] * len(calibration))
    reference = tie_values(identity).mean((0, 1))  # (M,) typical tie value of each modality
    expected = reference[pretext.assignments]  # (K, B, M)

    def classify(images: torch.Tensor) -> torch.Tensor:
        return -((tie_values(images)[:, None] - expected[None]) ** 2).sum((2, 3))

    return classify


@pytest.fixture(scope="module")
def one_thread_module():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_seam_reader_fails_the_seam_probe(one_thread_module) -> None:
    pretext = SLeMPretext(SLeMPretextConfig(**FIXED), num_modalities=M, spatial_dims=3)
    result = run_probes(seam_cheater(pretext), pretext, smooth_fields((2.0, 2.0, 2.0), seed=5), n=96, seed=1)
    assert result.plain > 0.5, result.summary()
    assert result.seam_zeroed < 2 * result.chance, result.summary()
    assert result.background_noise is None  # smooth fields have no exact-zero background: n/a
    assert any(f.startswith("seam_zeroed") for f in result.findings())
    assert "background noise n/a" in result.summary()


def test_background_reader_fails_the_background_probe(one_thread_module) -> None:
    pretext = SLeMPretext(SLeMPretextConfig(foreground_only=False, **FIXED), num_modalities=M, spatial_dims=3)
    cheater = background_cheater(pretext, skull_stripped(7)(32))
    result = run_probes(cheater, pretext, skull_stripped(8), n=96, seed=1)
    assert result.plain > 0.5, result.summary()
    assert result.background_noise is not None and result.background_noise < 2 * result.chance, result.summary()
    assert any(f.startswith("background_noise") for f in result.findings())


def test_probes_are_deterministic_and_serialise(one_thread_module) -> None:
    pretext = SLeMPretext(SLeMPretextConfig(**FIXED), num_modalities=M, spatial_dims=3)
    cheater = seam_cheater(pretext)
    a = run_probes(cheater, pretext, smooth_fields((2.0, 2.0, 2.0), seed=5), n=24, seed=3)
    b = run_probes(cheater, pretext, smooth_fields((2.0, 2.0, 2.0), seed=5), n=24, seed=3)
    assert a == b
    d = json.loads(json.dumps(a.to_dict()))
    assert {"plain", "seam_zeroed", "cross_case", "background_noise", "chance", "findings"} <= set(d)
    assert isinstance(a, ProbeResult) and "\n" not in a.summary()
    with pytest.raises(ValueError, match="band"):
        run_probes(cheater, pretext, smooth_fields((2.0,)), n=4, band=0)


# ------------------------------------------------------------------------------- pretraining and CLI hooks


def test_pretraining_writes_probes_and_the_audit_cli_reprobes_the_checkpoint(project, tmp_path, one_thread_module):
    from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
    from nnunet_slem.pretrain.settings import PretrainSettings

    settings = PretrainSettings(epochs=1, iters_per_epoch=2, batch_size=2, audit_samples=0, eval_batches=1,
                                probe_samples=8)
    final = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", settings,
                           results_root=tmp_path, preprocessed_root=project.env["nnUNet_preprocessed"]).run()
    probes = json.loads((final.parent / "probes.json").read_text())
    assert probes["n"] == 8 and set(probes) >= {"plain", "seam_zeroed", "cross_case", "background_noise"}
    assert "probes: probes (8 samples" in (final.parent / "pretrain_log.txt").read_text()
    out = tmp_path / "probes_cli.json"
    project.run("nnunet-slem", "audit", "-d", project.dataset_id, "-c", project.configuration, "-p", project.plans,
                "--checkpoint", final, "--probe-samples", 8, "--json", out,
                env={"nnUNet_results": str(tmp_path)})
    again = json.loads(out.read_text())
    assert {k: again[k] for k in ("plain", "seam_zeroed", "cross_case")} == {
        k: probes[k] for k in ("plain", "seam_zeroed", "cross_case")}  # same network, data and seed
    refused = project.run("nnunet-slem", "audit", "-d", project.dataset_id, "-c", project.configuration, "-p",
                          project.plans, "--checkpoint", final, "--grid", "2x2x2", check=False)
    assert refused.returncode != 0 and "--grid cannot be combined with --checkpoint" in refused.stderr + refused.stdout
