"""The comparison's building blocks: labelled subsets, the no-CFB network, JiGen, and baseline pretraining
handed to its fine-tuning trainer."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_slem.checkpoint_format import load_checkpoint
from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
from nnunet_slem.pretrain.settings import PretrainSettings
from nnunet_slem.trainers.labeled_subset import parse_labeled, pick_labeled_subset, subset_from_env

CASES = [f"case{i:02d}" for i in range(10)]


# ------------------------------------------------------------------------------------------ labelled subsets
def test_subset_is_reproducible_nested_and_seed_dependent():
    a = pick_labeled_subset(CASES, 3, seed=1)
    assert a == pick_labeled_subset(list(reversed(CASES)), 3, seed=1) and len(a) == 3
    assert set(a) <= set(pick_labeled_subset(CASES, 5, seed=1))  # nested in the label count
    assert any(pick_labeled_subset(CASES, 3, seed=s) != a for s in range(2, 6))
    assert len(pick_labeled_subset(CASES, 0.25, seed=0)) == 2  # round(2.5) = 2 patients


def test_subset_keeps_whole_patients():
    cases = ["p1_t0", "p1_t1", "p2_t0", "p3_t0", "p3_t1"]
    picked = pick_labeled_subset(cases, 2, seed=0, patient_pattern=r"^(.+)_t\d+$")
    patients = {c.split("_")[0] for c in picked}
    assert len(patients) == 2
    assert all((p + "_t1" in picked) == (p + "_t1" in cases) for p in patients)


def test_subset_errors_name_the_variable_and_fix(monkeypatch):
    with pytest.raises(UserFacingError, match="only 10 training patients"):
        pick_labeled_subset(CASES, 11)
    for bad in ("0", "-1", "1.5", "four"):
        with pytest.raises(UserFacingError, match="SLEM_LABELED"):
            parse_labeled(bad)
    with pytest.raises(UserFacingError, match="SLEM_PATIENT_REGEX"):
        pick_labeled_subset(CASES, 1, patient_pattern=r"^nomatch$")
    monkeypatch.delenv("SLEM_LABELED", raising=False)
    assert subset_from_env(CASES) is None
    monkeypatch.setenv("SLEM_LABELED", "2")
    monkeypatch.setenv("SLEM_LABELED_SEED", "7")
    assert subset_from_env(CASES) == pick_labeled_subset(CASES, 2, seed=7)


def test_trainer_split_keeps_validation_and_subsets_training(nnunet_paths, monkeypatch):
    from tests.test_trainers import make_trainer

    full_train, full_val = make_trainer(nnunet_paths, "SLeMTrainer_noPretrain_smoke", fold=0).do_split()
    monkeypatch.setenv("SLEM_LABELED", "2")
    monkeypatch.setenv("SLEM_EPOCHS", "3")
    trainer = make_trainer(nnunet_paths, "SLeMTrainer_noPretrain_smoke", fold=0)
    train, val = trainer.do_split()
    assert val == full_val and len(train) == 2 and set(train) <= set(full_train)
    monkeypatch.setenv("SLEM_EPOCHS", "zero")
    with pytest.raises(UserFacingError, match="SLEM_EPOCHS"):
        make_trainer(nnunet_paths, "SLeMTrainer_noPretrain", fold=0)


# --------------------------------------------------------------------------------------------- networks
def test_no_cfb_trainer_builds_exactly_nnunets_network(nnunet_paths):
    from tests.test_trainers import make_trainer

    trainer = make_trainer(nnunet_paths, "SLeMTrainer_noCFB_noPretrain", fold=0)
    trainer.initialize()
    cm = trainer.configuration_manager
    plain = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                   cm.network_arch_init_kwargs_req_import, 4, 2, deep_supervision=True)
    ours = trainer.plain_network.state_dict()
    assert set(ours) == set(plain.state_dict()) and not trainer.plain_network.has_cfb
    plain.load_state_dict(ours)  # strict: same keys, same shapes
    x = torch.randn(1, 4, *cm.patch_size)
    trainer.plain_network.eval(), plain.eval()
    assert torch.allclose(trainer.plain_network(x)[0], plain(x)[0])


def test_jigen_network_segments_and_classifies_permutations(nnunet_paths):
    from nnunet_slem.trainers.jigen import JiGenTrainer
    from tests.test_trainers import make_trainer

    trainer = make_trainer(nnunet_paths, "JiGenTrainer", fold=0)
    trainer.initialize()
    net = trainer.plain_network
    patch = list(trainer.configuration_manager.patch_size)
    x = torch.randn(2, 4, *patch)
    jigsaw, labels = trainer.jigsaw_batch(x)
    assert jigsaw.shape == x.shape and labels.shape == (2,) and int(labels.max()) < len(trainer.permutations)
    seg, logits = net(x, jigsaw)
    assert logits.shape == (2, len(trainer.permutations))
    net.eval()
    with torch.no_grad():  # one pass for both batches gives the same segmentation as a plain pass
        assert torch.allclose(net(x, jigsaw)[0][0], net(x)[0], atol=1e-5)
    # nnUNetv2_predict rebuilds the network from the class and loads the checkpoint strictly
    rebuilt = JiGenTrainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 4, 2,
                                                      False)
    rebuilt.load_state_dict(net.state_dict())
    # ordered fraction 1: every label is the identity and the jigsaw copy equals the input
    trainer.ordered_fraction = 1.0
    same, zeros = trainer.jigsaw_batch(x)
    assert torch.equal(same, x) and not zeros.any()


# ---------------------------------------------------------------------------- baseline pretraining hand-off
TINY = dict(epochs=1, iters_per_epoch=2, batch_size=2, audit_samples=0, probe_samples=0, eval_batches=1)


@pytest.mark.parametrize(("pretext", "cfb", "trainer_name", "folder"), [
    ("taleb", True, "SLeMTrainer_fromTaleb", "TalebPretrain"),
    ("supervoxel", True, "SLeMTrainer_fromSupervoxel", "SupervoxelPretrain"),
    ("mae", True, "SLeMTrainer_fromMAE", "MAEPretrain"),
    ("slem", False, "SLeMTrainer_noCFB", "SLeMPretrain_noCFB"),
])
def test_baseline_pretraining_hands_off_to_its_trainer(nnunet_paths, one_thread, tmp_path, monkeypatch, pretext, cfb,
                                                       trainer_name, folder):
    from tests.test_trainers import make_trainer

    options = {"n_segments": 20} if pretext == "supervoxel" else {}
    final = SLeMPretrainer(nnunet_paths.dataset_id, nnunet_paths.configuration, nnunet_paths.plans, "cpu",
                           PretrainSettings(pretext_name=pretext, cfb=cfb, pretext=options, **TINY),
                           results_root=tmp_path).run()
    assert final.parent.name.startswith(folder + "__")
    ckpt = load_checkpoint(final)
    assert ckpt["metadata"]["pretext_name"] == pretext and ckpt["metadata"]["cfb_config"]["enabled"] is cfb
    assert len(ckpt["logging"]["eval_acc"]) == 1 and (final.parent / "progress.png").is_file()
    # the optimiser trains what the pretext's forward uses: a dense pretext's decoder, never a classifier's
    fresh = SLeMPretrainer(nnunet_paths.dataset_id, nnunet_paths.configuration, nnunet_paths.plans, "cpu",
                           PretrainSettings(pretext_name=pretext, cfb=cfb, pretext=options, **TINY),
                           results_root=tmp_path / "fresh").build_model().network.state_dict()
    decoder = [k for k in fresh if k.startswith("decoder.stages.")]
    changed = [k for k in decoder if not torch.equal(fresh[k], ckpt["network_weights"][k])]
    assert bool(changed) == (pretext in ("supervoxel", "mae")), changed[:3]
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    trainer = make_trainer(nnunet_paths, trainer_name, fold=0)
    trainer.initialize()
    assert trainer.pretrained_weights_path() == final
    trainer.load_slem_pretrained_weights(final)
    state = trainer.plain_network.state_dict()
    # fine-tuning takes what the pretext trained: the decoder too for the dense pretext, else encoder + CFB
    prefixes = tuple(ckpt["metadata"]["trained_prefixes"])
    assert ("decoder.stages." in prefixes) == (pretext in ("supervoxel", "mae")) and "encoder." in prefixes
    assert all(torch.equal(state[k], v) for k, v in ckpt["network_weights"].items()
               if ".seg_layers." not in k and k.startswith(prefixes))
    if not cfb:  # a checkpoint without CFB refuses to load into the CFB network, naming the right trainer
        cfb_trainer = make_trainer(nnunet_paths, "SLeMTrainer_smoke", fold=0)
        cfb_trainer.initialize()
        with pytest.raises(UserFacingError, match="SLeMTrainer_noCFB"):
            cfb_trainer.load_slem_pretrained_weights(final)


def test_slem_only_flags_are_refused_for_other_pretexts(project):
    proc = project.run("nnunet-slem", "pretrain", "-d", project.dataset_id, "-c", project.configuration, "-p",
                       project.plans, "-device", "cpu", "--pretext", "taleb", "--grid", "2x2x1", check=False)
    assert proc.returncode == 2 and "--pretext-option" in proc.stderr and "Traceback" not in proc.stderr
