"""The Supernoba test console: a static trading page (`index.html`, `js/`) and its server (`serve.py`)."""
