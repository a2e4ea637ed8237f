"""localnemo: a NemoVideo-compatible server run locally (the test backend, and the offline FFmpeg editor).

Entry points live in ``localnemo.app`` (``create_app``, ``LocalNemo``, ``serve_forever``); tests add their controls
with ``localnemo.testing`` (``TestLocalNemo``, ``FaultPlan``, ``install_test_controls``).
"""
