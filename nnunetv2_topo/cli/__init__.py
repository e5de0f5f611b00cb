"""The ``nnunetv2_topo`` command line: one entry point, one module per subcommand."""
