"""The composition root: the command line and the wiring of settings, HTTP client, storage, engine and
platform adapters. The only package that knows every other one."""
