"""``python -m segqc``: the same command line as ``segqc``."""

from segqc.cli.main import main

main()
