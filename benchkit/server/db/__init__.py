"""The server's metadata database: models, engine and sessions, migrations."""
