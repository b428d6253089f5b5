"""`make soak`: the local stack under load while faults are injected, with figures (issue 10).

- `stack`  — the local stack (`tools.dev.LocalStack`) in a child process that obeys fault commands
- `report` — `docs/reliability.md` from the results
- `__main__` — the soak itself: baseline + one load per fault, ground-truth checks, bad-input run
"""
