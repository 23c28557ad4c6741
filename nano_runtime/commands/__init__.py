"""Subcommands of `nano`: one module each (NAME, HELP, add_arguments, run)."""
