"""Bundled data: a synthetic multi-modal MRI generator, to try the pipeline without a download."""
