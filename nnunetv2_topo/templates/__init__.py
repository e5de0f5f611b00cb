"""Files the package copies out rather than imports: the bundle's ``submit.py`` (:mod:`.kaggle_submit`, copied by
``kaggle-bundle``; it runs the ``nnunetv2_topo`` command)."""
