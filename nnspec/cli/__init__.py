"""The command line: a thin typer app in ``main`` (the spec commands, diagnostics printing and exit
codes), the commands that speak other tools' formats in ``interop``, the option checks both share in
``options``, and the warm server and its client, the console script's entry, in ``server`` (which
imports nothing heavy before it knows whether a server takes the command)."""
