"""SLeMTrainer in-process: lookup through nnUNet_extTrainer, the hand-off of pretrained weights, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

import nnunet_slem.trainers as package_trainers
from nnunet_slem.checkpoint_format import load_checkpoint, save_checkpoint_file
from nnunet_slem.errors import UserFacingError
from nnunet_slem.trainers.slem_trainer import unaliased_keys


def make_trainer(project, name: str = "SLeMTrainer_smoke", fold: int = 0):
    trainer_class = recursive_find_trainer_class_by_name(name)
    plans = json.loads((project.preprocessed / f"{project.plans}.json").read_text(encoding="utf-8"))
    plans["continue_training"] = False
    dataset_json = json.loads((project.preprocessed / "dataset.json").read_text(encoding="utf-8"))
    return trainer_class(plans=plans, configuration=project.configuration, fold=fold, dataset_json=dataset_json,
                         device=torch.device("cpu"))


@pytest.mark.parametrize("name", package_trainers.__all__)
def test_nnunet_finds_the_installed_package_classes(nnunet_paths, name):
    found = recursive_find_trainer_class_by_name(name)
    assert found is getattr(package_trainers, name)
    assert found.__module__.startswith("nnunet_slem.trainers")


def test_wrong_ext_trainer_gives_nnunets_own_error(nnunet_paths, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer SLeMTrainer"):
        recursive_find_trainer_class_by_name("SLeMTrainer")


def test_handoff_weights_equal_the_pretrained_ones(nnunet_paths, pretrained_checkpoint):
    trainer = make_trainer(nnunet_paths)
    trainer.initialize()
    before = {k: v.clone() for k, v in trainer.plain_network.state_dict().items()}
    trainer.load_slem_pretrained_weights(pretrained_checkpoint)
    ckpt = load_checkpoint(pretrained_checkpoint)
    pretrained = ckpt["network_weights"]
    assert ckpt["metadata"]["trained_prefixes"] == ["encoder.", "cfb."]
    after = trainer.plain_network.state_dict()
    transferred = [k for k in after if k.startswith(("encoder.", "cfb."))]
    assert transferred and all(torch.equal(after[k], pretrained[k]) for k in transferred)
    # what the classification pretext never trained keeps this run's fresh initialisation: the segmentation
    # layers and the decoder (copying the checkpoint's untrained decoder would pass it off as pretrained)
    untouched = [k for k in after if not k.startswith(("encoder.", "cfb.", "decoder.encoder."))]
    assert any(k.startswith("decoder.stages.") for k in untouched)
    assert all(torch.equal(after[k], before[k]) for k in untouched)
    # and something really changed: the pretrained encoder differs from a fresh one
    assert not torch.equal(after["encoder.stages.0.0.convs.0.conv.weight"],
                           before["encoder.stages.0.0.convs.0.conv.weight"])
    record = json.loads((Path(trainer.output_folder) / "slem_pretrained_from.json").read_text(encoding="utf-8"))
    # counted once per tensor: nnU-Net's modules reach some tensors under two names (all_modules, decoder.encoder)
    assert record["tensors_loaded"] == len(set(unaliased_keys(after)) & set(transferred)) < len(transferred)
    parts = record["tensors_per_part"]
    assert parts["decoder"]["loaded"] == 0 < parts["decoder"]["total"]
    assert parts["seg_layers"]["loaded"] == 0
    assert parts["encoder"]["loaded"] == parts["encoder"]["total"] > 0


def test_checkpoints_without_trained_prefixes_load_what_their_pretext_trained(nnunet_paths, pretrained_checkpoint,
                                                                              tmp_path):
    """Checkpoints written before the prefixes were recorded: classification pretexts gave encoder + CFB."""
    old = _edited_checkpoint(pretrained_checkpoint, tmp_path / "old.pth",
                             lambda ckpt: ckpt["metadata"].pop("trained_prefixes"))
    trainer = make_trainer(nnunet_paths)
    trainer.initialize()
    decoder_before = {k: v.clone() for k, v in trainer.plain_network.state_dict().items()
                      if k.startswith("decoder.") and not k.startswith("decoder.encoder.")}
    trainer.load_slem_pretrained_weights(old)
    after = trainer.plain_network.state_dict()
    assert all(torch.equal(after[k], v) for k, v in decoder_before.items())


def test_stock_pretrained_weights_loader_accepts_the_checkpoint(nnunet_paths, pretrained_checkpoint):
    trainer = make_trainer(nnunet_paths, "SLeMTrainer_noPretrain_smoke")
    trainer.initialize()
    assert not trainer._weights_replaced_since_init()
    load_pretrained_weights(trainer.network, str(pretrained_checkpoint))
    # SLeMTrainer notices -pretrained_weights and keeps them instead of loading its default
    assert trainer._weights_replaced_since_init()


def _edited_checkpoint(src, dst, edit):
    """A checkpoint as another pretraining run would write it: edited, then saved with a fresh digest."""
    ckpt = load_checkpoint(src)
    edit(ckpt)
    save_checkpoint_file(ckpt, dst)
    return dst


def test_mismatched_channel_names_are_a_hard_error(nnunet_paths, pretrained_checkpoint, tmp_path):
    def swap(ckpt):
        names = ckpt["metadata"]["channel_names"]
        names[0], names[1] = names[1], names[0]

    bad = _edited_checkpoint(pretrained_checkpoint, tmp_path / "swapped.pth", swap)
    trainer = make_trainer(nnunet_paths)
    trainer.initialize()
    with pytest.raises(UserFacingError, match=r"channel names/order.*\['seqB', 'seqA'.*\['seqA', 'seqB'"):
        trainer.load_slem_pretrained_weights(bad)


def test_mismatched_channel_count_and_architecture(nnunet_paths, pretrained_checkpoint, tmp_path):
    def three_channels(ckpt):
        ckpt["metadata"]["num_input_channels"] = 3

    trainer = make_trainer(nnunet_paths)
    trainer.initialize()
    with pytest.raises(UserFacingError, match="channel count.*3.*4"):
        trainer.load_slem_pretrained_weights(_edited_checkpoint(pretrained_checkpoint, tmp_path / "c.pth",
                                                                three_channels))

    def other_architecture(ckpt):
        key = "encoder.stages.0.0.convs.0.conv.weight"
        ckpt["network_weights"][key] = torch.zeros(5, *ckpt["network_weights"][key].shape[1:])

    with pytest.raises(UserFacingError, match="architecture.*mis-shaped"):
        trainer.load_slem_pretrained_weights(_edited_checkpoint(pretrained_checkpoint, tmp_path / "a.pth",
                                                                other_architecture))


def test_softer_mismatches_only_warn(nnunet_paths, pretrained_checkpoint, tmp_path):
    def other_dataset(ckpt):
        ckpt["metadata"]["dataset_name"] = "Dataset001_Other"
        ckpt["metadata"]["patch_size"] = [64, 64, 64]

    trainer = make_trainer(nnunet_paths)
    trainer.initialize()
    with pytest.warns(UserWarning, match="dataset_name"):
        trainer.load_slem_pretrained_weights(_edited_checkpoint(pretrained_checkpoint, tmp_path / "o.pth",
                                                                other_dataset))


def test_truncated_checkpoint_is_named(nnunet_paths, pretrained_checkpoint, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(pretrained_checkpoint.read_bytes()[:5000])
    with pytest.raises(UserFacingError, match="truncated or corrupt"):
        load_checkpoint(broken)


def test_missing_weights_message_names_file_and_command(nnunet_paths, monkeypatch, tmp_path):
    monkeypatch.setenv("SLEM_PRETRAINED_WEIGHTS", str(tmp_path / "nope.pth"))
    trainer = make_trainer(nnunet_paths)
    with pytest.raises(UserFacingError, match=r"nope\.pth.*nnunet-slem pretrain -d Dataset777"):
        trainer.on_train_start()
    assert trainer.dataloader_train is None  # failed before any data loading started


def test_continue_training_does_not_reload_pretraining(nnunet_paths, monkeypatch, tmp_path):
    monkeypatch.setenv("SLEM_PRETRAINED_WEIGHTS", str(tmp_path / "nope.pth"))
    trainer = make_trainer(nnunet_paths)
    trainer.current_epoch = 3  # as after --c with a checkpoint
    calls = []
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: calls.append(1))
    trainer.on_train_start()  # no error although the file is missing: nothing is loaded
    assert calls == [1]


def test_seed_gives_every_method_the_same_decoder_and_data_draws(nnunet_paths, monkeypatch):
    """SLEM_SEED pairs the arms: scratch (plain network) and SLeM (CFB network) start from the same decoder."""
    import numpy as np

    monkeypatch.setenv("SLEM_SEED", "3")
    scratch = make_trainer(nnunet_paths, "SLeMTrainer_noCFB_noPretrain")
    slem = make_trainer(nnunet_paths, "SLeMTrainer_smoke")
    draws = []
    for trainer in (scratch, slem):
        trainer.initialize()
        monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: draws.append(np.random.rand()))
        trainer.use_slem_pretraining = False
        trainer.on_train_start()
    a, b = scratch.plain_network.state_dict(), slem.plain_network.state_dict()
    shared = [k for k in a if k.startswith(("decoder.", "encoder."))]
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)
    assert draws[0] == draws[1]  # the loaders' first draw, although the CFB network drew more at build time
    monkeypatch.setenv("SLEM_SEED", "4")
    other = make_trainer(nnunet_paths, "SLeMTrainer_noCFB_noPretrain")
    other.initialize()
    assert not torch.equal(other.plain_network.state_dict()[shared[0]], a[shared[0]])


def test_bad_seed_is_a_clear_error(nnunet_paths, monkeypatch):
    monkeypatch.setenv("SLEM_SEED", "abc")
    with pytest.raises(UserFacingError, match="SLEM_SEED='abc' must be a non-negative integer"):
        make_trainer(nnunet_paths, "SLeMTrainer_noCFB_noPretrain")


@pytest.mark.parametrize(("name", "lr", "decoder_epochs"), [
    ("SLeMTrainer", 1e-2, 0), ("SLeMTrainer_warmupRecipe", 1e-3, 0), ("SLeMTrainer_sawtooth", 1e-3, 1),
    ("SLeMTrainer_noPretrain", 1e-2, 0), ("SLeMTrainer_noCFB_noPretrain", 1e-2, 0), ("JiGenTrainer", 1e-2, 0)])
def test_recipes_of_the_trainers(nnunet_paths, monkeypatch, name, lr, decoder_epochs):
    """Every arm fine-tunes with nnU-Net's recipe unless a recipe variant says otherwise; warm-ups scale with the
    schedule."""
    monkeypatch.setenv("SLEM_EPOCHS", "20")
    trainer = make_trainer(nnunet_paths, name)
    trainer.initialize()
    assert trainer.initial_lr == lr
    assert trainer.decoder_warmup_epochs == decoder_epochs
    trainer.lr_scheduler.step(trainer.num_epochs - 1)
    assert 0 < trainer.optimizer.param_groups[0]["lr"] < lr


def test_decoder_warmup_freezes_encoder_and_cfb(nnunet_paths):
    from nnunet_slem.trainers.variants import SLeMTrainer_decoderWarmup

    trainer = make_trainer(nnunet_paths, "SLeMTrainer_decoderWarmup")
    assert isinstance(trainer, SLeMTrainer_decoderWarmup)
    trainer.initialize()
    trainer.on_train_epoch_start()
    net = trainer.plain_network
    assert not any(p.requires_grad for p in net.cfb.parameters())
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for p in net.decoder.seg_layers.parameters())
    assert trainer.decoder_warmup_epochs == 50  # 5 % of nnU-Net's 1000 epochs
    trainer.current_epoch = trainer.decoder_warmup_epochs
    trainer.on_train_epoch_start()
    assert all(p.requires_grad for p in net.parameters())


def test_decoder_warmup_is_a_fraction_of_short_schedules(nnunet_paths, monkeypatch):
    monkeypatch.setenv("SLEM_EPOCHS", "10")
    trainer = make_trainer(nnunet_paths, "SLeMTrainer_decoderWarmup")
    assert trainer.decoder_warmup_epochs == 1  # not 50 epochs of a 10-epoch training


def test_checkpoints_are_written_atomically(nnunet_paths, monkeypatch, tmp_path):
    """A save that dies half-way (as under SIGKILL) leaves the previous checkpoint loadable, and no stray file."""
    monkeypatch.setenv("SLEM_SAVE_EVERY", "2")
    trainer = make_trainer(nnunet_paths, "SLeMTrainer_noPretrain_smoke")
    assert trainer.save_every == 2
    trainer.initialize()
    target = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(target))
    saved = target.read_bytes()
    assert torch.load(target, map_location="cpu", weights_only=False)["network_weights"]

    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[:1000])  # only part of the file reached the disk
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(torch, "save", dies_half_way)
    trainer.current_epoch = 1
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(str(target))
    assert target.read_bytes() == saved
    monkeypatch.setattr(torch, "save", real_save)
    trainer.save_checkpoint(str(target))  # the next save replaces the leftover temporary file
    # (nnU-Net stores the epoch to continue with)
    assert torch.load(target, map_location="cpu", weights_only=False)["current_epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pth"]  # no temporary file left


# ------------------------------------------------------------------------------------------------ schedule
SCHEDULE_VARIABLES = ("SLEM_EPOCHS", "SLEM_ITERS_PER_EPOCH", "SLEM_VAL_ITERS", "SLEM_SAVE_EVERY")


@pytest.mark.parametrize(("name", "expected"), [
    ("SLeMTrainer", (1000, 250, 50, 50)),  # nnU-Net's own
    ("SLeMTrainer_smoke", (2, 5, 2, 50)), ("SLeMTrainer_noPretrain_smoke", (2, 5, 2, 50)),
    ("SLeMTrainer_demo", (10, 20, 2, 50)), ("SLeMTrainer_noPretrain_demo", (10, 20, 2, 50))])
def test_a_variants_schedule_default_applies(nnunet_paths, monkeypatch, name, expected):
    for variable in SCHEDULE_VARIABLES + ("SLEM_DEMO_EPOCHS", "SLEM_DEMO_ITERS"):
        monkeypatch.delenv(variable, raising=False)
    trainer = make_trainer(nnunet_paths, name)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch,
            trainer.save_every) == expected


def test_the_environment_beats_the_class_schedule_in_training_log_and_json(nnunet_paths, monkeypatch):
    """The smoke variant's 2 epochs and 2 validation iterations give way to SLEM_EPOCHS / SLEM_VAL_ITERS, and
    the log and schedule.json say what the run really trains on."""
    for variable in SCHEDULE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SLEM_EPOCHS", "7")
    monkeypatch.setenv("SLEM_VAL_ITERS", "4")
    monkeypatch.setenv("SLEM_SEED", "5")
    trainer = make_trainer(nnunet_paths, "SLeMTrainer_noPretrain_smoke")
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (7, 5, 4)
    schedule_file = Path(trainer.output_folder) / "schedule.json"
    schedule_file.unlink(missing_ok=True)
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: None)
    trainer.on_train_start()
    log = Path(trainer.log_file).read_text(encoding="utf-8")
    assert ("Schedule (SLeMTrainer_noPretrain_smoke): 7 epochs x 5 iterations, 4 validation iterations per epoch, "
            "checkpoint_latest.pth every 50 epochs") in log
    assert "Schedule from the environment: {'SLEM_EPOCHS': 7, 'SLEM_VAL_ITERS': 4}" in log
    record = json.loads(schedule_file.read_text(encoding="utf-8"))
    assert {k: record[k] for k in ("trainer", "num_epochs", "num_iterations_per_epoch",
                                   "num_val_iterations_per_epoch", "save_every", "seed")} == {
        "trainer": "SLeMTrainer_noPretrain_smoke", "num_epochs": 7, "num_iterations_per_epoch": 5,
        "num_val_iterations_per_epoch": 4, "save_every": 50, "seed": 5}
    assert record["from_environment"] == {"SLEM_EPOCHS": 7, "SLEM_VAL_ITERS": 4}
    assert record["recipe"]["initial_lr"] == 1e-2 and record["recipe"]["warmup_epochs"] == 0
    assert not list(Path(trainer.output_folder).glob(".schedule.json.*"))  # written atomically


# ------------------------------------------------------------------------------------- CFB mismatch fix
@pytest.mark.parametrize(("pretext", "saved_cfb", "trainer_name", "fix"), [
    ("slem", False, "SLeMTrainer_smoke", "Fine-tune it with -tr SLeMTrainer_noCFB, or pretrain without --no-cfb."),
    ("mae", False, "SLeMTrainer_smoke", "Fine-tune it with -tr SLeMTrainer_noCFB_fromMAE, or pretrain without"),
    ("mae", True, "SLeMTrainer_noCFB", "Fine-tune it with -tr SLeMTrainer_fromMAE, or pretrain with --no-cfb."),
    ("slem", True, "SLeMTrainer_noCFB_fromMAE", "-tr SLeMTrainer, or pretrain --pretext mae with --no-cfb."),
    ("taleb", False, "SLeMTrainer_fromTaleb", "No nnunet-slem trainer fine-tunes a taleb checkpoint without the CFB"),
])
def test_cfb_mismatch_names_the_trainer_of_the_checkpoints_pretext(nnunet_paths, pretrained_checkpoint, tmp_path,
                                                                   pretext, saved_cfb, trainer_name, fix):
    def relabel(ckpt):
        ckpt["metadata"]["pretext_name"] = pretext
        ckpt["metadata"]["cfb_config"]["enabled"] = saved_cfb

    checkpoint = _edited_checkpoint(pretrained_checkpoint, tmp_path / "relabelled.pth", relabel)
    trainer = make_trainer(nnunet_paths, trainer_name)
    with pytest.raises(UserFacingError) as caught:
        trainer.load_slem_pretrained_weights(checkpoint)
    assert fix in str(caught.value)


def test_trainer_for_checkpoint_sees_the_variants_when_only_slem_trainer_is_imported():
    """``slem_trainer`` no longer imports ``variants`` (that was an import cycle): importing it alone, in a fresh
    interpreter, must still define the variants it suggests (Python runs the package's ``__init__`` first)."""
    import subprocess
    import sys

    code = ("from nnunet_slem.trainers.slem_trainer import trainer_for_checkpoint\n"
            "from nnunet_slem.trainers.recipes import NNUNET_RECIPE\n"
            "print(trainer_for_checkpoint('mae', False, NNUNET_RECIPE), trainer_for_checkpoint('slem', False, "
            "NNUNET_RECIPE))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", check=True)
    assert done.stdout.split() == ["SLeMTrainer_noCFB_fromMAE", "SLeMTrainer_noCFB"]


_FIRST_BATCHES = """
import json, sys
import torch
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
name, plans_file, dataset_json_file, configuration, out = sys.argv[1:]
plans = json.load(open(plans_file))
plans["continue_training"] = False
trainer = recursive_find_trainer_class_by_name(name)(plans=plans, configuration=configuration, fold=0,
                                                     dataset_json=json.load(open(dataset_json_file)),
                                                     device=torch.device("cpu"))
trainer.initialize()
train, val = trainer.get_dataloaders()
assert type(train).__name__ == "MultiThreadedAugmenter", type(train)  # nnU-Net's non-deterministic one replaced
torch.save([torch.as_tensor(next(train)["data"]).clone() for _ in range(3)], out)
for loader in (train, val):
    loader._finish()
"""


def _first_batches(project, name: str, seed: str, out: Path) -> list[torch.Tensor]:
    """The first 3 training batches of a trainer with 2 augmentation workers, in a fresh interpreter (forking
    workers from a test process that already ran many torch tests is not what nnU-Net does), with a timeout."""
    import os
    import subprocess
    import sys

    env = {**os.environ, **project.env, "SLEM_SEED": seed, "nnUNet_n_proc_DA": "2"}
    subprocess.run([sys.executable, "-c", _FIRST_BATCHES, name, str(project.preprocessed / f"{project.plans}.json"),
                    str(project.preprocessed / "dataset.json"), project.configuration, str(out)],
                   env=env, check=True, timeout=600, capture_output=True)
    return torch.load(out)


def test_augmentation_workers_are_seeded_by_slem_seed(nnunet_paths, tmp_path):
    """With 2 augmentation workers, two arms at one SLEM_SEED get identical first batches (patches and
    augmentation), and another seed gets different ones; workers differ from each other within a run."""
    scratch = _first_batches(nnunet_paths, "SLeMTrainer_noCFB_noPretrain", "3", tmp_path / "a.pt")
    slem = _first_batches(nnunet_paths, "SLeMTrainer_smoke", "3", tmp_path / "b.pt")
    other = _first_batches(nnunet_paths, "SLeMTrainer_smoke", "4", tmp_path / "c.pt")
    assert all(torch.equal(a, b) for a, b in zip(scratch, slem))
    assert not any(torch.equal(a, b) for a, b in zip(slem, other))
    assert not torch.equal(slem[0], slem[1])  # worker 0 and worker 1 draw differently


def test_worker_seeds_are_distinct_and_reproducible():
    from nnunet_slem.trainers.seeded_workers import worker_seeds

    assert worker_seeds(3, 0, 4) == worker_seeds(3, 0, 4)
    assert len(set(worker_seeds(3, 0, 4) + worker_seeds(3, 1, 4) + worker_seeds(4, 0, 4))) == 12
