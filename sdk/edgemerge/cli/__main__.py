"""`python -m edgemerge.cli`: the same as the `edgemerge` command."""
from edgemerge.cli import main

main()
