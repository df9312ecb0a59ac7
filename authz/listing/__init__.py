"""The response path (SPEC §9): Envoy's external processor that removes from MCP list answers
every entry the caller could not call. One module per step: `exchange.py` reads Envoy's
messages, `caller.py` finds the caller and its chain, `entries.py` decides each entry,
`answers.py`, `sse.py` and `encoding.py` read and rewrite bodies, `replies.py` shapes the
answers to Envoy, `stream.py` runs one ext_proc stream through them and `service.py` holds
what the streams share."""
