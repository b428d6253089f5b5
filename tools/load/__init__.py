"""Load generator for Supernoba's local stack (issue 10).

N WebSocket clients (logged in through test mode, anonymous, or mixed), each subscribed to
one symbol, and M orders/s over REST (test-mode `X-Test-User` header) for T seconds. Every
message a client receives is recorded; the report gives orders accepted/final, messages
expected/delivered, latency percentiles per tier and errors by kind. Latency counts only
messages caused by the load's own events: not an event from before the load started, nor the
depth/ticker snapshot a (re)subscription starts with (`model.build_report` has the rule).

    python -m tools.load --rest http://127.0.0.1:8000 --ws ws://127.0.0.1:8001/api \
        --clients 50 --mode mixed --rate 50 --duration 30

Modules:

- `model`   — configuration, what was recorded, and the report (pure, unit-tested)
- `orders`  — the deterministic order flow and the REST sender
- `clients` — one recording WebSocket client, with reconnect + resubscribe
- `runner`  — runs one load (optionally with a fault script running alongside)
- `verify`  — ground truth from Kinesis, DynamoDB and Valkey against a fresh engine replay
"""
