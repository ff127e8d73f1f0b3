from postwright.cli import app

app()
