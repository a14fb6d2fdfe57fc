"""``python -m xswarm`` runs the command line, like the ``xswarm`` script."""

from xswarm.cli import main

main()
