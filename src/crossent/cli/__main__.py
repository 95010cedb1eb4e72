"""``python -m crossent.cli`` runs the ``crossent`` command."""

from . import main

raise SystemExit(main())
