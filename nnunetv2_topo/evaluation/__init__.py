"""Evaluation workflows: scoring folders of predictions, raw or post-processed (:mod:`.folder_scoring`), one case in
memory with a tile-count cache (:mod:`.case_scoring`), the score table (:mod:`.score_table`), error maps
(:mod:`.error_maps`) and the training ranks' background scoring process (:mod:`.scoring_pool`, :mod:`.score_worker`;
this package imports nothing heavy, so that process stays light)."""
