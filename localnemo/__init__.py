"""localnemo: a NemoVideo-compatible server run locally (the test backend, and the offline FFmpeg editor).

Entry points live in ``localnemo.server`` (``create_app``, ``LocalNemo``, ``serve_forever``).
"""
