"""streamer_pkg: depth, candles and tickers from the depth cache to WebSocket clients (SPEC §1, §6).

`python -m streamer_pkg [--debug] [--init]`; see docs/streamer.md. The service is
`streamer_pkg.tiers.Streamer`.
"""
