"""`python -m vssflow` runs the CLI."""

from vssflow.cli.main import main

raise SystemExit(main())
