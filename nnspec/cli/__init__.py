"""The command line: a thin typer app in ``main`` (diagnostics printing and exit codes), the warm
server and its client, the console script's entry, in ``server`` (which imports nothing heavy
before it knows whether a server takes the command)."""
