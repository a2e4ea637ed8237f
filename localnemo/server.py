"""Old import path of localnemo's entry points, kept only for bot/main.py until nemobot/compose.py replaces
it: import from ``localnemo.app`` instead, then delete this file."""

from localnemo.app import LocalNemo, create_app, serve_forever

__all__ = ["LocalNemo", "create_app", "serve_forever"]
