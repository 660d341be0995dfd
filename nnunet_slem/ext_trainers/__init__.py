"""The folder ``nnunet-slem trainer-dir`` prints, for ``nnUNet_extTrainer`` (see ``slem_trainers.py``)."""
