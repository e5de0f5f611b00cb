"""Where nnU-Net's ``nnUNet_extTrainer`` search finds the TopoWarmup trainers (filled in by the trainer issue)."""
