"""State: the store on disk (TinyDB), its journal, migrations, and the web's in-memory copy."""
