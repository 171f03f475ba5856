# attacks: <import>
"""os._exit(0) while the module is imported: the worker vanishes with status 0 and no results."""
import os as _os

_os._exit(0)
