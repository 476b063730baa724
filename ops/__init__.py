"""The operations plane: a token-protected HTTP API over one node or a fleet of nodes.

``ops.api`` (aiohttp routes), ``ops.node`` (a node's files, from its own config),
``ops.aggregate`` (PnL and exposure summed over the nodes' ``/metrics``). Run with
``python -m ops``; see docs/OPS_RUNBOOK.md "Operations API".
"""
