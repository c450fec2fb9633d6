"""The ``lsf`` command line: argument parsing and printing, nothing else.

What lives here: ``main``, the entry point, and one module per sub-command with ``add_arguments(parser)``
and ``run(args) -> int`` that calls the library. May import any package of lsf_core; nothing imports it.
"""
