"""Facts the cluster-mode tests share about the local 3-primary cluster (tools.services)."""

#: Symbols whose `{SYM}` hash slots fall on the three different primaries (the `cluster`
#: fixture of tests/conftest.py asserts it, so a cluster test cannot pass on one node).
CLUSTER_SYMBOLS = ("TEST", "X", "AAPL")
