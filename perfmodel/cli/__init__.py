"""The ``perfmodel`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``HELP`` (one line), ``configure(parser)`` (adds its arguments) and
``run(args) -> int``. :func:`perfmodel.cli.main.main` dispatches; tests call it in-process.
"""
