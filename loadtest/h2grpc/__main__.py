"""`python -m loadtest.h2grpc`: one run of the driver against a server (see loadtest/h2grpc/__init__.py)."""

from loadtest.h2grpc import main

raise SystemExit(main())
