"""The folder listed in ``nnUNet_extTrainer`` (a declared package so that wheels carry it as code).

nnU-Net imports every *module* of this folder as a top-level module (``pkgutil.iter_modules`` skips this
``__init__``), so the only module here is the thin re-export :mod:`nnunetv2_topo_trainers`.
"""
