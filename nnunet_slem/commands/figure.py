"""``nnunet-slem figure``: modality slices, ground truth and predictions side by side, one row per case.

Drawing conventions (case and slice choice, colours, windowing) are in :mod:`nnunet_slem.evaluation.figure`.
"""

from __future__ import annotations

import argparse
import json

from nnunet_slem.errors import UserFacingError

HELP = "PNG + PDF figure: modality slices, ground truth and predictions as region overlays, per case"


def _prediction_arg(text: str):
    from nnunet_slem.evaluation.figure import parse_prediction

    try:
        return parse_prediction(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="images", required=True, metavar="IMAGES_DIR",
                        help="images in nnU-Net naming (CASE_0000.nii.gz, ...)")
    parser.add_argument("-ref", dest="ref", required=True, metavar="LABELS_DIR", help="ground-truth segmentations")
    parser.add_argument("--pred", dest="predictions", action="append", required=True, type=_prediction_arg,
                        metavar="NAME=PRED_DIR", help="a model's predictions (repeat for several models)")
    parser.add_argument("-d", dest="dataset", metavar="ID",
                        help="dataset id or name; its dataset.json gives channel names, labels and file ending")
    parser.add_argument("-dj", dest="dataset_json", metavar="JSON", help="path to dataset.json (instead of -d)")
    parser.add_argument("--cases", nargs="+", metavar="CASE",
                        help="cases to show, one row each [the 3 with the largest ground-truth foreground]")
    parser.add_argument("--slice", dest="slice_index", type=int, metavar="N",
                        help="slice index for every case [per case: most ground-truth foreground]")
    parser.add_argument("--axis", type=int, choices=[0, 1, 2], default=0,
                        help="slicing axis of the (z, y, x) array: 0 = along z (axial), 1 = y, 2 = x [0]")
    parser.add_argument("-o", dest="out", default="slem_figure.png", metavar="OUT.png",
                        help="PNG to write; the PDF gets the same stem [slem_figure.png]")


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.commands.evaluate import find_dataset_json
    from nnunet_slem.evaluation.figure import make_figure

    dj_path = find_dataset_json(args.dataset, args.dataset_json)
    try:
        dataset_json = json.loads(dj_path.read_text(encoding="utf-8"))
        dataset_json["labels"], dataset_json["channel_names"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError) as e:
        raise UserFacingError(
            f"{dj_path}: cannot read 'labels' and 'channel_names' ({e}); is this an nnU-Net v2 dataset.json?"
        ) from None
    names = [p.name for p in args.predictions]
    if len(set(names)) != len(names):
        raise UserFacingError(f"--pred names must differ (got {', '.join(names)}); use NAME=PRED_DIR")
    png, pdf, shown = make_figure(args.images, args.ref, args.predictions, dataset_json, args.out,
                                  cases=args.cases, slice_index=args.slice_index, axis=args.axis)
    rows = ", ".join(f"{case} (slice {index})" for case, index in shown.items())
    print(f"rows: {rows}\nwrote {png} and {pdf}")
