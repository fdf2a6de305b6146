"""The sdit command line: thin Typer commands over the library."""
