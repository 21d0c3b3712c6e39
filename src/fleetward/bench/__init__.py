"""Benchmarks: each module measures one hot path against a ceiling taken in the same run.

Run them by hand (``python -m fleetward.bench.<name>``) or through ``fleetward bench``; they
are never run by the test suite, because timings on shared machines are not pass/fail facts.
"""
