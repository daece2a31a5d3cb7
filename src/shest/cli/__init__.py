"""The ``shest`` command line: one subcommand per pipeline stage."""
