"""Pretraining on nnU-Net's preprocessed data: checkpoint format, resume, label leakage, clear errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from nnunet_slem.checkpoint_format import load_checkpoint
from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretrain.data import ImageSource, PatchStream, random_patch
from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
from nnunet_slem.pretrain.settings import PretrainSettings, lr_at

TINY = dict(iters_per_epoch=2, batch_size=2, audit_samples=0, probe_samples=0, eval_batches=1)


def test_checkpoint_loads_with_weights_only_and_carries_metadata(pretrained_checkpoint, project):
    ckpt = torch.load(pretrained_checkpoint, weights_only=True)
    meta = ckpt["metadata"]
    assert meta["dataset_name"] == project.dataset_name
    assert meta["plans_name"] == project.plans and meta["configuration"] == project.configuration
    assert meta["channel_names"] == ["seqA", "seqB", "seqC", "seqD"] and meta["num_input_channels"] == 4
    assert meta["normalization_schemes"] and meta["patch_size"] and meta["spacing"]
    assert {"dilations", "reduction", "min_extent"} <= set(meta["cfb_config"])
    assert len(meta["pretext"]["assignments"]) == 24 and meta["pretext"]["config"]["grid"] == [2, 2, 1]
    assert 0.0 <= meta["audit"]["accuracy"] <= 1.0 and meta["audit"]["num_classes"] == 24
    assert ckpt["epoch"] == 2 and len(ckpt["logging"]["eval_acc"]) == 2
    folder = pretrained_checkpoint.parent
    assert (folder / "progress.png").stat().st_size > 1000
    assert "audit:" in (folder / "pretrain_log.txt").read_text(encoding="utf-8")
    assert not (folder / "checkpoint_latest.pth").exists()


def test_network_weights_are_the_full_slem_trainer_network(pretrained_checkpoint, nnunet_paths):
    from tests.test_trainers import make_trainer

    trainer = make_trainer(nnunet_paths, "SLeMTrainer_noPretrain_smoke", fold=1)
    trainer.initialize()
    weights = torch.load(pretrained_checkpoint, weights_only=True)["network_weights"]
    state = trainer.plain_network.state_dict()
    assert set(weights) == set(state)
    assert all(weights[k].shape == state[k].shape for k in state)


def test_resume_continues_exactly_where_it_stopped(project, tmp_path):
    """Two epochs in one go == one epoch, stop, ``--resume`` for the second (same weights, same log)."""
    straight = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                              PretrainSettings(epochs=2, **TINY), results_root=tmp_path / "a",
                              preprocessed_root=project.env["nnUNet_preprocessed"]).run()
    SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                   PretrainSettings(epochs=2, **TINY), results_root=tmp_path / "b",
                   preprocessed_root=project.env["nnUNet_preprocessed"]).run(stop_after=1)
    folder_b = tmp_path / "b" / project.dataset_name / f"SLeMPretrain__{project.plans}__{project.configuration}"
    assert (folder_b / "checkpoint_latest.pth").is_file() and not (folder_b / "checkpoint_final.pth").exists()
    with pytest.raises(UserFacingError, match="--c to continue"):
        SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                       PretrainSettings(epochs=2, **TINY), results_root=tmp_path / "b",
                       preprocessed_root=project.env["nnUNet_preprocessed"]).run()
    resumed = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                             PretrainSettings(epochs=2, **TINY), results_root=tmp_path / "b",
                             preprocessed_root=project.env["nnUNet_preprocessed"]).run(resume=True)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["logging"]["loss"] == pytest.approx(b["logging"]["loss"], rel=1e-5)
    for key, value in a["network_weights"].items():
        assert torch.allclose(value, b["network_weights"][key], atol=1e-6), key


def test_resume_refuses_another_pretext(project, tmp_path):
    kwargs = dict(results_root=tmp_path, preprocessed_root=project.env["nnUNet_preprocessed"])
    SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                   PretrainSettings(epochs=2, **TINY), **kwargs).run(stop_after=1)
    other = PretrainSettings(epochs=2, **TINY, pretext={"num_assignments": 12})
    with pytest.raises(UserFacingError, match="different pretext"):
        SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", other, **kwargs).run(
            resume=True)


def test_patches_never_depend_on_labels(project, tmp_path):
    """Swap every case's segmentation for another case's: the sampled patches stay bit-identical."""
    data_folder = project.preprocessed / "nnUNetPlans_3d_fullres"
    copy = tmp_path / "data"
    shutil.copytree(data_folder, copy)
    segs = sorted(copy.glob("*_seg.b2nd"))
    assert len(segs) >= 2
    first = segs[0].read_bytes()
    for a, b in zip(segs, segs[1:] + segs[:1]):
        a.write_bytes(b.read_bytes() if b != segs[0] else first)
    patch = [16, 16, 16]
    original = iter(PatchStream(ImageSource(data_folder, None), patch, 3, seed=5))
    swapped = iter(PatchStream(ImageSource(copy, None), patch, 3, seed=5))
    for _ in range(4):
        assert torch.equal(next(original), next(swapped))


def test_random_patch_pads_small_images_and_stays_inside():
    rng = np.random.default_rng(0)
    image = np.arange(2 * 5 * 6 * 7, dtype=np.float32).reshape(2, 5, 6, 7) + 1
    for _ in range(20):
        patch = random_patch(image, (8, 4, 7), rng)
        assert patch.shape == (2, 8, 4, 7)
        assert (patch > 0).sum() == 2 * 5 * 4 * 7  # every image voxel of the window, zero padding elsewhere


def test_unlabeled_images_are_preprocessed_with_the_same_plans(project, tmp_path):
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for f in (project.raw / "imagesTr").glob("pat00_*.nii.gz"):
        shutil.copy(f, unlabeled / f.name.replace("pat00", "extra"))
    trainer = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                             PretrainSettings(**TINY), unlabeled_dir=str(unlabeled), results_root=tmp_path,
                             preprocessed_root=project.env["nnUNet_preprocessed"])
    source = trainer._image_source()
    n_labeled = len(list((project.raw / "labelsTr").glob("*.nii.gz")))
    assert len(source) == n_labeled + 1
    assert source.items[-1] == ("pool", "extra")  # nnU-Net's compressed format, in the pool's own cache
    cached = np.asarray(source.image(len(source) - 1))
    labeled = np.asarray(source.image(0))  # pat00 itself, preprocessed by nnU-Net
    assert cached.shape == labeled.shape and np.allclose(cached, labeled, atol=1e-4)


def test_unlabeled_folder_with_missing_channel(project, tmp_path):
    (tmp_path / "u").mkdir()
    shutil.copy(project.raw / "imagesTr" / "pat00_0000.nii.gz", tmp_path / "u" / "x_0000.nii.gz")
    trainer = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                             PretrainSettings(**TINY), unlabeled_dir=str(tmp_path / "u"), results_root=tmp_path,
                             preprocessed_root=project.env["nnUNet_preprocessed"])
    with pytest.raises(UserFacingError, match=r"x has channels \[0\].*4"):
        trainer._image_source()


@pytest.mark.parametrize("kwargs,match", [
    (dict(dataset=778), "No preprocessed dataset with id 778"),
    (dict(plans="nnUNetPlansXL"), r"Plans 'nnUNetPlansXL' not found.*nnUNetPlans"),
    (dict(configuration="2d_lowres"), r"Configuration '2d_lowres' is not in plans.*3d_fullres"),
])
def test_clear_errors_for_wrong_dataset_plans_configuration(project, tmp_path, kwargs, match):
    args = dict(dataset=project.dataset_id, configuration=project.configuration, plans=project.plans) | kwargs
    with pytest.raises(UserFacingError, match=match):
        SLeMPretrainer(args["dataset"], args["configuration"], args["plans"], "cpu", PretrainSettings(**TINY),
                       results_root=tmp_path, preprocessed_root=project.env["nnUNet_preprocessed"])


def test_patch_too_small_for_the_grid(project, tmp_path):
    # 16 parts of at least 4 voxels need 64 voxels; the patch is at most 40 along every axis
    settings = PretrainSettings(**TINY, pretext={"grid": [1, 1, 16]})
    with pytest.raises(UserFacingError, match="grid"):
        SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", settings,
                       results_root=tmp_path, preprocessed_root=project.env["nnUNet_preprocessed"])


def test_lr_schedules():
    s = PretrainSettings(lr=1.0, warmup_iters=10, schedule="cosine")
    assert lr_at(0, 110, s) == pytest.approx(0.1) and lr_at(9, 110, s) == pytest.approx(1.0)
    assert lr_at(60, 110, s) == pytest.approx(0.5) and lr_at(110, 110, s) == pytest.approx(0.0)
    p = PretrainSettings(lr=1.0, schedule="poly")
    assert lr_at(50, 100, p) == pytest.approx(0.5 ** 0.9)
    with pytest.raises(UserFacingError):
        PretrainSettings(schedule="step")


def test_float16_transfer_hands_over_half_the_bytes_with_the_same_patches(project, one_thread):
    source = ImageSource(project.preprocessed / "nnUNetPlans_3d_fullres", None)
    full = PatchStream(source, (16, 16, 16), 2, seed=3).batch(1)
    half = PatchStream(source, (16, 16, 16), 2, seed=3, dtype=np.float16).batch(1)
    assert half.dtype == torch.float16 and half.element_size() * 2 == full.element_size()
    assert torch.allclose(half.float(), full, rtol=1e-3, atol=1e-3)


def test_pretraining_runs_with_float16_transfer(project, tmp_path, one_thread):
    trainer = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                             PretrainSettings(epochs=1, transfer_dtype="float16", **TINY), results_root=tmp_path,
                             preprocessed_root=project.env["nnUNet_preprocessed"])
    assert trainer.transfer_dtype() == "float16"
    assert load_checkpoint(trainer.run())["epoch"] == 1
    auto = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", PretrainSettings(**TINY),
                          results_root=tmp_path / "auto", preprocessed_root=project.env["nnUNet_preprocessed"])
    assert auto.transfer_dtype() == "float32"  # float16 only pays off on the way to a GPU


def test_cfb_and_plain_pretrainings_of_one_seed_start_from_the_same_head(project, tmp_path):
    """The head is seeded on its own: the CFB draws from the RNG before it, which used to change the head."""
    heads = []
    for cfb in (True, False):
        trainer = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                                 PretrainSettings(cfb=cfb, seed=5, **TINY), results_root=tmp_path / str(cfb),
                                 preprocessed_root=project.env["nnUNet_preprocessed"])
        model = trainer.build_model()
        assert (model.network.cfb.__class__.__name__ == "Identity") is not cfb
        heads.append(model.head.state_dict())
    assert heads[0].keys() == heads[1].keys() and all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    # and the encoder, built before the CFB, is the same too
    other = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                           PretrainSettings(cfb=True, seed=6, **TINY), results_root=tmp_path / "6",
                           preprocessed_root=project.env["nnUNet_preprocessed"]).build_model()
    assert not all(torch.equal(heads[0][k], v) for k, v in other.head.state_dict().items())
