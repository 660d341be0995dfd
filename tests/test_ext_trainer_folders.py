"""README's ``export nnUNet_extTrainer=$(nnunet-slem trainer-dir)${nnUNet_extTrainer:+:$nnUNet_extTrainer}``
keeps the user's own trainer folders: nnU-Net 2.8 splits the variable on ``os.pathsep``
(``nnunetv2/utilities/find_objects.py``) and searches each folder, so our trainers and the user's are both found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

import nnunet_slem.trainers as package_trainers
from nnunet_slem.experiments.workflow import console_script
from nnunet_slem.paths import trainer_dir

README_LINE = "export nnUNet_extTrainer=$(nnunet-slem trainer-dir)${nnUNet_extTrainer:+:$nnUNet_extTrainer}"


def _user_trainer_folder(root: Path) -> Path:
    """A folder with a trainer of the user's own, as someone with custom nnU-Net trainers has."""
    folder = root / "my_trainers"
    folder.mkdir()
    (folder / "my_user_trainers.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n\n"
        "class MyUserTrainer(nnUNetTrainer):\n    pass\n", encoding="utf-8")
    return folder


def _after_readme_line(before: str | None) -> str:
    """The variable after the README's line runs in bash (``nnunet-slem`` from this interpreter's folder)."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    if before is not None:
        env["nnUNet_extTrainer"] = before
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this interpreter's scripts
    out = subprocess.run(["bash", "-c", f'{README_LINE}; printf %s "$nnUNet_extTrainer"'], env=env,
                         capture_output=True, encoding="utf-8", check=True)
    return out.stdout


def test_readme_line_appends_the_users_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert README_LINE in (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    user = _user_trainer_folder(tmp_path)
    ours = subprocess.run([console_script("nnunet-slem"), "trainer-dir"], capture_output=True,
                          encoding="utf-8", check=True).stdout.strip()
    assert _after_readme_line(None) == ours  # unset: our folder alone, no empty entry
    value = _after_readme_line(str(user))
    assert value.split(os.pathsep) == [ours, str(user)]
    # nnU-Net finds both trainers through the two-folder variable (ours from this checkout's package)
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(trainer_dir()), str(user)]))
    assert recursive_find_trainer_class_by_name("SLeMTrainer") is package_trainers.SLeMTrainer
    assert recursive_find_trainer_class_by_name("MyUserTrainer").__name__ == "MyUserTrainer"


@pytest.mark.integration
def test_nnunet_trains_our_trainer_with_the_users_folder_first(project, tmp_path: Path) -> None:
    """The harder order: nnU-Net searches the user's folder, misses, and goes on to ours."""
    user = _user_trainer_folder(tmp_path)
    trainer = "SLeMTrainer_noPretrain_smoke"
    proc = project.run("nnUNetv2_train", project.dataset_id, project.configuration, 4, "-tr", trainer, "-p",
                       project.plans, "-device", "cpu",
                       env={"nnUNet_extTrainer": os.pathsep.join([str(user), project.env["nnUNet_extTrainer"]])})
    assert f"Searching in: {user}" in proc.stdout
    assert f"Using trainer '{trainer}' from: {project.env['nnUNet_extTrainer']}" in proc.stdout
    fold = project.results / f"{trainer}__{project.plans}__{project.configuration}" / "fold_4"
    assert (fold / "checkpoint_final.pth").is_file()
