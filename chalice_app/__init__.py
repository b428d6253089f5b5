"""Supernoba's Chalice-side package: the logic behind `app.py`, and the contracts
(configuration, Valkey key names, event shapes) that the engine and streamer import too.

Kept import-light on purpose: `import chalice_app` must not pull in boto3 or redis,
so each submodule imports what it needs itself.
"""
