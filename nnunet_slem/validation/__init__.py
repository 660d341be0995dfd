"""Checks of the user's inputs (checkpoints, JSON files, numbers, output places, NIfTI files) that end in one
:class:`~nnunet_slem.errors.UserFacingError` naming the file, the field and the fix.

A leaf package (like ``errors`` and ``checkpoint_format``): it imports no other part of ``nnunet_slem`` than the
leaf modules, so every layer (pretraining, the trainers, the side libraries, the commands) can call it before it
writes anything. See docs/bad_inputs.md for the catalogue of inputs tried and the tests behind each.
"""
