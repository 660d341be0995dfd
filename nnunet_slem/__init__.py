"""nnunet-slem: SLeM self-supervised multi-modal pretraining and contextual fusion for nnU-Net v2."""

__version__ = "0.1.0"
