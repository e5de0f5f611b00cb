"""Developer tools of the repository, not ``nnunetv2_topo`` subcommands: the generator of ``docs/reference/``
(:mod:`.reference_docs`, ``make docs``)."""
