# attacks: <import>
"""sys.exit(0) while the module is imported."""
import sys as _sys

_sys.exit(0)
