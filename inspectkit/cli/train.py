"""Train the inspection model: two-stage transfer learning of a torchvision backbone; writes final_best_model.pt.

    python train.py --data ../shared/data/casting --weights ../shared/weights/mobilenet_v2_imagenet1k.pth

Stage 1 trains a new head on the frozen ImageNet backbone, stage 2 unfreezes the last K blocks at a lower
learning rate. The validation split is carved out of train with near-duplicates kept on one side; the test
split is only evaluated (by evaluate.py, run at the end unless --no-eval), never used for a choice.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from inspectkit.command import error
from inspectkit.inference.fast import torch_missing
from inspectkit.labels import parse_display_names

if torch_missing('train.py (training)'):  # the serving install (requirements.txt) has no torch: say what to install
    sys.exit(torch_missing('train.py (training)'))
from inspectkit.engine.training import TrainConfig


def _display_names(text: str) -> dict:
    """--display-names: ``class=Label,...`` (checked against the classes once the data are read)."""
    try:
        return parse_display_names(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    """Command-line options, one per TrainConfig field (same names, dashes for underscores)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=d.data, help="casting layout (train/ and test/ of class folders) or folder-per-class")
    p.add_argument("--extra-data", action="append", default=[], metavar="FOLDER",
                   help="another line or photo session (folder-per-class, the same classes) to train and validate on "
                        "too; each is split on its own by near-duplicate groups (repeatable)")
    p.add_argument("--arch", default=d.arch, choices=["mobilenet_v2", "resnet18"])
    p.add_argument("--weights", default=d.weights,
                   help="'imagenet' (torchvision's official weights; needs internet or the torch hub cache), "
                        "a local state_dict file, or 'none'")
    p.add_argument("--defect-class", default=d.defect_class,
                   help="name of the defect class folder (automatic for the casting set's def_front); omit for multi-class")
    p.add_argument("--size", type=int, default=d.size, help="input size in pixels")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction,
                   help="test split carved out for a data set without a test/ folder")
    p.add_argument("--twin-threshold", type=float, default=d.twin_threshold,
                   help="similarity above which two images count as near-duplicates")
    p.add_argument("--max-group-fraction", type=float, default=d.max_group_fraction,
                   help="near-duplicate groups larger than this fraction of their class always stay in train")
    p.add_argument("--views", type=int, default=d.views, help="cached views per train image (1 clean + augmented)")
    p.add_argument("--aug-strength", type=float, default=d.aug_strength)
    p.add_argument("--aug-rotation", type=float, default=d.aug_rotation,
                   help="rotation range of the augmented views in degrees at strength 1 (180: any turn)")
    p.add_argument("--last-blocks", type=int, default=d.last_blocks, help="K: blocks unfrozen in stage 2")
    p.add_argument("--stage1-epochs", type=int, default=d.stage1_epochs)
    p.add_argument("--stage2-epochs", type=int, default=d.stage2_epochs)
    p.add_argument("--lr1", type=float, default=d.lr1, help="stage 1 learning rate")
    p.add_argument("--lr2", type=float, default=d.lr2, help="stage 2 learning rate (lower)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without improvement before stopping")
    p.add_argument("--ema-epochs", type=float, default=d.ema_epochs,
                   help="validate and keep an exponential moving average of the weights over about this many "
                        "epochs (0: off, the weights of the best epoch)")
    p.add_argument("--members", type=int, default=d.members,
                   help="stage-2 runs from the same stage-1 model (own data order and views), whose weights are "
                        "averaged into one network (a model soup; 1: a single run)")
    p.add_argument("--target-recall", type=float, default=d.target_recall,
                   help="defect recall the threshold must keep on validation")
    p.add_argument("--region-weight", type=float, default=d.region_weight,
                   help="data with defect boxes or masks (NEU-DET, MVTec AD): weight of the stage-2 penalty on "
                        "heat-map mass outside the defect region (0: off)")
    p.add_argument("--display-names", type=_display_names, default={}, metavar="CLASS=LABEL,...",
                   help="human labels shown beside the class names, e.g. def_front=Defect,ok_front=OK (default: "
                        "derived from the folder names: def_* -> Defect, ok_* -> OK, else title case)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--split-seed", type=int, default=d.split_seed,
                   help="seed of the validation split (default: --seed); fix it to compare several seeds on one split")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (0: default)")
    p.add_argument("--limit", type=int, default=d.limit, help="at most this many images per class (smoke runs)")
    p.add_argument("--out", default=d.out, help="checkpoint path")
    p.add_argument("--reports", default="reports", help="folder for the evaluation report")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation at the end")
    a = p.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(a, f.name) for f in fields(TrainConfig) if hasattr(a, f.name)})
    return cfg, a


def main(argv=None) -> int:
    cfg, a = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inspectkit.engine.training import train

    try:
        train(cfg)
    except (ValueError, RuntimeError) as exc:
        error("train.py", str(exc))
        return 2
    if not a.no_eval:
        from inspectkit.engine.evaluation import run_evaluation

        run_evaluation(cfg.out, cfg.data, a.reports, update_checkpoint=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
