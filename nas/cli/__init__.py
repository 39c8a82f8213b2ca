"""The command-line layer: one module per command and the helpers they share (arguments, checks, errors)."""
