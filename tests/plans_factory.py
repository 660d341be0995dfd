"""Small hand-written nnU-Net plans for unit tests (no planning run needed)."""

from __future__ import annotations

import copy

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

_PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
_RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def make_plans(patch_size=(32, 32, 32), features=(8, 16, 32, 32), residual=False, slem_cfb=None) -> dict:
    """Plans with one configuration 'cfg' whose strides halve every axis down the stages."""
    dim = len(patch_size)
    n = len(features)
    conv = f"torch.nn.modules.conv.Conv{dim}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dim}d"
    strides = [[1] * dim] + [[2] * dim for _ in range(n - 1)]
    arch_kwargs = {
        "n_stages": n,
        "features_per_stage": list(features),
        "conv_op": conv,
        "kernel_sizes": [[3] * dim] * n,
        "strides": strides,
        "n_conv_per_stage_decoder": [1] * (n - 1),
        "conv_bias": True,
        "norm_op": norm,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if residual:
        arch_kwargs["n_blocks_per_stage"] = [1] * n
    else:
        arch_kwargs["n_conv_per_stage"] = [2] * n
    cfg = {
        "data_identifier": "nnUNetPlans_cfg",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(patch_size),
        "median_image_size_in_voxels": list(patch_size),
        "spacing": [1.0] * dim,
        "normalization_schemes": ["ZScoreNormalization"] * 4,
        "use_mask_for_norm": [False] * 4,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                               "force_separate_z": None},
        "architecture": {
            "network_class_name": _RESENC if residual else _PLAIN,
            "arch_kwargs": arch_kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": True,
    }
    if slem_cfb is not None:
        cfg["slem_cfb"] = slem_cfb
    return {
        "dataset_name": "Dataset999_Unit",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0] * dim,
        "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(range(dim)),
        "transpose_backward": list(range(dim)),
        "configurations": {"cfg": cfg},
        "experiment_planner_used": "unit-test",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }


def configuration_manager(**kwargs):
    return PlansManager(copy.deepcopy(make_plans(**kwargs))).get_configuration("cfg")
