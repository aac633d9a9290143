"""Anatomy-level tools for label maps (``segqc labels``); label quality of pseudo-label datasets is in
:mod:`.quality`."""
