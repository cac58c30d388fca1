"""The pool as a service: HTTP probes, Prometheus metrics, signed webhooks, store watching, JSON logs.

Imported only by `start` (cli/fleet.py) and the pool (engine/pool.py), never on the `once` path:
a run that does not listen pays nothing for it (tests check `sys.modules`).
"""
