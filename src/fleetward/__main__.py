"""``python -m fleetward`` is the ``fleetward`` command."""

from fleetward.cli.main import main

main()
