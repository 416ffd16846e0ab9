"""``python -m daemon`` runs the admin CLI."""

from daemon.cli import main

main()
