"""``nnunetv2_topo trainer-path``: print the folder to put in ``nnUNet_extTrainer``."""

from __future__ import annotations

import argparse

from nnunetv2_topo.nnunet_env import ext_trainer_configured, trainer_folder

HELP = "print the folder that nnUNet_extTrainer must list so nnU-Net finds the TopoWarmup trainers"
DESCRIPTION = f"""{HELP}.

Usage:
  export nnUNet_extTrainer=$(nnunetv2_topo trainer-path)
  nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerTopoWarmup
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="exit 1 if nnUNet_extTrainer does not list it")


def run(args: argparse.Namespace) -> int:
    print(trainer_folder())
    if args.check and not ext_trainer_configured():
        return 1
    return 0
