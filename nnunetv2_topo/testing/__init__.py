"""Test and benchmark support, kept apart from the package proper (nothing in ``nnunetv2_topo`` imports it):

- :mod:`.metric_reference`: straightforward, slow implementations of the metric's definition (the baseline the
  fast metric is checked and benchmarked against);
- :mod:`.probability_maps`: simulated probability maps with a real network's failure modes (post-processing
  tests and benchmarks);
- :mod:`.untrained`: untrained nnU-Net model folders (``predict`` tests and cost benchmarks);
- :mod:`.simulated_logs`: simulated validation-loss curves (the LR-schedule tests and
  ``benchmarks/schedule_replay.py``).
"""
