"""`python -m thrifty`: the same command as `thrifty`."""

from thrifty.cli import main

main()
