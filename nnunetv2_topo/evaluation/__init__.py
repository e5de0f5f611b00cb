"""Evaluation workflows: post-process then score (:mod:`.scoring`: one volume in memory with a tile-count cache, or
a folder of predictions) and the score table (:mod:`.score_table`). Scoring a pair of folders is
:func:`nnunetv2_topo.metrics.evaluate_folders`."""
