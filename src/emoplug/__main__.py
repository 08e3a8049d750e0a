"""``python -m emoplug`` (and ``accelerate launch -m emoplug``) runs the CLI."""

from emoplug.cli import main

main()
