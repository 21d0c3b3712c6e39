"""Remote commands as jobs: the job model and its state machine (the commands issue builds
the rest: idempotency, preconditions, envelopes, dispatch)."""
