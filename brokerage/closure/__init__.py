"""Account closure: a durable, resumable workflow (cancel and liquidate, wait T+1, withdraw, close).

Ray-free: `records` holds what is persisted, `process` the state machine over the `Broker` port on
the injectable clock. `actors/closure_orchestrator.py` drives it on Ray; tests drive it in process.
"""
