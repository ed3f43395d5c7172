"""python -m nnspec"""

from nnspec.cli.server import entry

entry()
