"""localnemo: a NemoVideo-compatible server run locally (the test backend, and later the offline engine).

Entry points live in ``localnemo.server`` (``create_app``, ``LocalNemo``, ``serve_forever``).
"""
