from optimlab.cli import run

run()
