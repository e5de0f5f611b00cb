"""The folder nnU-Net's ``nnUNet_extTrainer`` search imports (:mod:`.ext`): a thin re-export of the TopoWarmup
trainers. Nothing in the package imports this package; the folder's name and the environment that lists it live in
:mod:`nnunetv2_topo.nnunet_env` (re-exported here for code written against earlier releases)."""

from nnunetv2_topo.nnunet_env import EXT_TRAINER_ENV_VAR as ENV_VAR
from nnunetv2_topo.nnunet_env import ext_trainer_configured, ext_trainer_env, trainer_folder

__all__ = ["ENV_VAR", "ext_trainer_configured", "ext_trainer_env", "trainer_folder"]
