"""Command-line layer: argument parsing only; every command calls one library function."""
