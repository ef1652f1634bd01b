from benchkit.cli.main import run

run()
