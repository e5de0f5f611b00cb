"""From probability maps to clean binary sheets: reading probability inputs and pairing them by case
(:mod:`.probabilities`), the fusion rule of several models' maps (:mod:`.fusion`), the topology clean-up
(``postprocess_volume(volume, PostprocessConfig())``) and the ``postprocess.json`` format (:mod:`.config_file`)."""

from nnunetv2_topo.postprocessing.closing import ellipsoid, separated_closing
from nnunetv2_topo.postprocessing.components import (
    add_without_joining,
    binarize,
    fill_cavities,
    hysteresis,
    remove_small_components,
)
from nnunetv2_topo.postprocessing.config_file import (
    POSTPROCESS_FILE_VERSION,
    FusionSpec,
    PostprocessFile,
    load_postprocess_file,
    save_postprocess_file,
)
from nnunetv2_topo.postprocessing.fusion import (
    FUSION_MODES,
    LOGIT_CLAMP,
    Fusion,
    FusionError,
    check_fusion_weights,
    logit_to_probability,
    probability_to_logit,
)
from nnunetv2_topo.postprocessing.height_map import patch_holes
from nnunetv2_topo.postprocessing.plugging import WATERTIGHT_LUT, plug_holes_lut, plug_pinholes
from nnunetv2_topo.postprocessing.probabilities import (
    ProbabilityError,
    fuse_probability_files,
    index_cases,
    model_folds,
    paired_cases,
    read_probability,
)
from nnunetv2_topo.postprocessing.steps import (
    PLUG_METHODS,
    STEP_FIELDS,
    STEP_ORDER,
    PostprocessConfig,
    PostprocessConfigError,
    postprocess_volume,
)

__all__ = [
    "FUSION_MODES",
    "LOGIT_CLAMP",
    "PLUG_METHODS",
    "POSTPROCESS_FILE_VERSION",
    "STEP_FIELDS",
    "STEP_ORDER",
    "WATERTIGHT_LUT",
    "Fusion",
    "FusionError",
    "FusionSpec",
    "PostprocessConfig",
    "PostprocessConfigError",
    "PostprocessFile",
    "ProbabilityError",
    "add_without_joining",
    "binarize",
    "check_fusion_weights",
    "ellipsoid",
    "fill_cavities",
    "fuse_probability_files",
    "hysteresis",
    "index_cases",
    "load_postprocess_file",
    "logit_to_probability",
    "model_folds",
    "paired_cases",
    "patch_holes",
    "plug_holes_lut",
    "plug_pinholes",
    "postprocess_volume",
    "probability_to_logit",
    "read_probability",
    "remove_small_components",
    "save_postprocess_file",
    "separated_closing",
]
