"""Evaluation workflows: post-process then score (:mod:`.scoring`: one volume in memory with a tile-count cache, or
a folder of predictions), the score table (:mod:`.score_table`) and the training ranks' background scoring process
(:mod:`.scoring_pool`, :mod:`.score_worker`; this package imports nothing heavy, so that process stays light).
Scoring a pair of folders is :func:`nnunetv2_topo.metrics.evaluate_folders`."""
