"""A thin shim kept for ``python -m dataset_conversion.convert_vesuvius`` in a checkout (not installed): the converter
is :mod:`nnunetv2_topo.conversion` (``nnUNetv2_convert_vesuvius``)."""
