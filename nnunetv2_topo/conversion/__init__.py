"""``nnUNetv2_convert_vesuvius``: the Kaggle Vesuvius surface-detection folder -> an nnU-Net raw dataset
(:mod:`.convert_vesuvius`), with its cross-validation splits (:mod:`.splits`) and the checks on the folder and each
case (:mod:`.case_checks`)."""
