"""The command line of the library (typer); flows/cli.py adds the commands that need Prefect."""
