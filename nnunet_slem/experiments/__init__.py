"""Experiments: multi-step runs built from nnU-Net's commands and this package's trainers and pretraining
(``compare``, the demo, shared helpers that drive nnU-Net's CLI). Imported by ``commands/`` only."""
