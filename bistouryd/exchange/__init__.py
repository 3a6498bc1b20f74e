"""HyperLiquid access: the SDK feed, trading rules, order books (pure parts are I/O-free)."""
