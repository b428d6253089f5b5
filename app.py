"""Supernoba's Chalice app: the wiring of every REST route, WebSocket handler, Kinesis
trigger and schedule. The logic lives in the `chalice_app` package."""

from chalice import Chalice

app = Chalice(app_name="supernoba")


@app.route("/health", methods=["GET"])
def health() -> dict:
    return {"status": "ok"}
