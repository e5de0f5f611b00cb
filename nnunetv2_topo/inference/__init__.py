"""Live prediction with nnU-Net's predictor: input cases (:mod:`.cases`), trained-model folders (:mod:`.models`) and
fused, post-processed prediction (:mod:`.predict`). Probability maps read from files, their fusion and the
post-processing are :mod:`nnunetv2_topo.postprocessing`."""
