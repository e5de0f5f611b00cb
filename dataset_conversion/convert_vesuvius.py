"""A thin shim: the converter is :mod:`nnunetv2_topo.conversion.convert_vesuvius` (``nnUNetv2_convert_vesuvius``)."""

import sys

from nnunetv2_topo.conversion.convert_vesuvius import build_parser, convert, main

__all__ = ["build_parser", "convert", "main"]

if __name__ == "__main__":
    sys.exit(main())
