"""`python -m strategy_engine.cli`: the same app as the `strategy-engine` script."""

from strategy_engine.cli.app import main

main()
