"""Bistoury daemon: trades HyperLiquid perpetuals from narratives read by a language model.

Kept import-free so that the client, which shares a few stdlib-only modules of this
package (paths, protocol), starts fast.
"""

__version__ = "0.1.0"
