"""``python -m segqc``: the same command line as ``segqc``."""

from segqc.cli.entry import main

main()
