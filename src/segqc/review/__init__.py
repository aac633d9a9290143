"""Looking at cases and deciding: the local review app (``segqc review``) and its decision store."""
