"""``python -m perfmodel`` is the same as the ``perfmodel`` command."""
import sys

from perfmodel.cli.main import main

sys.exit(main())
