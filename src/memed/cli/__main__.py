"""``python -m memed.cli``: the same entry point as the ``memed`` script."""

from memed.cli.main import main

main()
