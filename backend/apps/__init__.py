"""Command-line apps: argument parsing, logging set-up and printing only; the work is done below them."""
