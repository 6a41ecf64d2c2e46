"""``python -m perfmodel`` is the same as the ``perfmodel`` command."""
import sys

from perfmodel.cli.main import main

if __name__ == "__main__":  # mpi4py.futures re-imports the main module on its worker ranks
    sys.exit(main())
