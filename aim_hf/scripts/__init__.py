"""One module per `aim-hf` command (`train`, `evaluate`, `methods`), each with a `main(argv)` that the
dispatcher (`aim_hf.cli.main`) calls, and functions to do the same from Python (as TRL's scripts)."""
