"""Where documents live: the seam (``base``), the byte format of files
(``records``), and the stores: ``file`` (a data directory) and ``memory``.

May import ``collab.core`` only (never ``server`` or ``tornado``).
"""
