"""`python -m loadtest.micro`: see loadtest/micro/cli.py."""

from loadtest.micro.cli import main

raise SystemExit(main())
