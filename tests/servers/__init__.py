"""Test apps for tests/test_servers.py, served by real servers in subprocesses.

``common`` is what both apps serve (configured by ``$ZW_CONFIG``), ``wsgi_app`` and
``asgi_app`` wrap it in zipware's middlewares for gunicorn and uvicorn, and ``harness``
starts, inspects and stops those servers (and is the pytest plugin that prints a server's
stderr when a test fails).
"""
