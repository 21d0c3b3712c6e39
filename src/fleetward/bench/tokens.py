"""Access token validation cost, as ratios to a bare ES256 verification in the same run.

Measured, one after another, on the same token:

a. ``bare``: ``cryptography`` ECDSA P-256 verify of the token's signature (DER signature and
   signing input prepared once): the ceiling no validator can beat without a cache;
b. ``joserfc``: ``joserfc.jws.deserialize_compact`` (split, decode, ES256 verify) plus the
   payload JSON decode;
c. ``validate_nocache``: the full :meth:`AccessTokenValidator.validate` with the cache off;
d. ``validate_cache``: the same with the verified-token cache on.

(c) and (d) use :class:`InMemoryRevocations` holding a few unrelated revocations, so the
revocation lookup does real work. The four are interleaved in short slices (a b c d a b c d
...) so that load from other processes drifting during the run hits all of them alike; the
ratios are the figures to compare across machines. Run:
``python -m fleetward.bench.tokens [seconds]`` (seconds per measurement, default 2).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws

from fleetward.core.clock import SystemClock
from fleetward.core.surfaces import Surface
from fleetward.identity.tokens.access import AccessTokenValidator
from fleetward.identity.tokens.compact import b64url_decode
from fleetward.identity.tokens.issuing import AccessTokenIssuer
from fleetward.identity.tokens.keys import Keyring
from fleetward.identity.tokens.revocation import InMemoryRevocations

_ISSUER = "https://id.fleetward.bench"
_WARMUP_CALLS = 200
_SLICE_SECONDS = 0.25


def _timed_sync(call: Callable[[], object], seconds: float, samples: list[int]) -> None:
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while True:
        start = clock()
        call()
        end = clock()
        samples.append(end - start)
        if end >= deadline:
            return


async def _timed_async(
    call: Callable[[], Awaitable[object]], seconds: float, samples: list[int]
) -> None:
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while True:
        start = clock()
        await call()
        end = clock()
        samples.append(end - start)
        if end >= deadline:
            return


def _rate(samples: list[int]) -> float:
    return len(samples) / (sum(samples) / 1e9)


def _percentile_ms(samples: list[int], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def run(seconds: float = 2.0) -> dict[str, float]:
    """Measure (a)-(d) for ``seconds`` each; returns per-second rates, latencies and ratios."""
    clock = SystemClock()
    keyring = Keyring.generate(clock)
    issuer = AccessTokenIssuer(keyring, _ISSUER, clock, default_lifetime=timedelta(minutes=15))
    token = issuer.issue(
        subject="usr_bench",
        client_id="cli_bench",
        tenant="ten_bench",
        surface=Surface.MOBILE,
        scopes=["vehicle:read", "vehicle:unlock", "vehicle:locate"],
        auth_time=clock.now(),
        acr="urn:fleetward:acr:mfa",
        amr=["pwd", "otp"],
        token_family="fam_bench",  # noqa: S106 - a family id, not a secret
        subject_type="user",
    ).token
    revocations = InMemoryRevocations()
    for n in range(100):
        revocations.revoke_user(f"usr_other_{n}", clock.now())
        revocations.revoke_jti(f"jti_other_{n}", clock.now() + timedelta(minutes=15))

    # (a) the ceiling: one ECDSA verify, inputs prepared outside the loop.
    header_and_payload, signature_segment = token.rsplit(".", 1)
    raw_signature = b64url_decode(signature_segment)
    der_signature = encode_dss_signature(
        int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big")
    )
    signing_input = header_and_payload.encode("ascii")
    public_key = keyring.active.public_key.public_key
    algorithm = ec.ECDSA(hashes.SHA256())

    def bare() -> None:
        public_key.verify(der_signature, signing_input, algorithm)

    # (b) the library path.
    jose_key = keyring.active.public_key

    def joserfc_decode() -> None:
        json.loads(jws.deserialize_compact(token, jose_key, algorithms=["ES256"]).payload)

    nocache = AccessTokenValidator(keyring, _ISSUER, clock, revocations, cache_size=0)
    cached = AccessTokenValidator(keyring, _ISSUER, clock, revocations)

    async def validate_nocache() -> None:
        await nocache.validate(token, surface=Surface.MOBILE)

    async def validate_cache() -> None:
        await cached.validate(token, surface=Surface.MOBILE)

    a: list[int] = []
    b: list[int] = []
    c: list[int] = []
    d: list[int] = []

    async def measure() -> None:
        for _ in range(_WARMUP_CALLS):
            bare()
            joserfc_decode()
            await validate_nocache()
            await validate_cache()
        rounds = max(1, round(seconds / _SLICE_SECONDS))
        for _ in range(rounds):
            _timed_sync(bare, seconds / rounds, a)
            _timed_sync(joserfc_decode, seconds / rounds, b)
            await _timed_async(validate_nocache, seconds / rounds, c)
            await _timed_async(validate_cache, seconds / rounds, d)

    asyncio.run(measure())
    rate_a, rate_c, rate_d = _rate(a), _rate(c), _rate(d)
    return {
        "bare_es256_verify_per_s": rate_a,
        "joserfc_decode_verify_per_s": _rate(b),
        "validate_nocache_per_s": rate_c,
        "validate_cache_per_s": rate_d,
        "validate_nocache_p50_ms": _percentile_ms(c, 0.50),
        "validate_nocache_p99_ms": _percentile_ms(c, 0.99),
        "validate_cache_p50_ms": _percentile_ms(d, 0.50),
        "validate_cache_p99_ms": _percentile_ms(d, 0.99),
        "ratio_nocache_to_bare": rate_c / rate_a,
        "ratio_cache_to_bare": rate_d / rate_a,
        "bare_es256_p50_ms": statistics.median(a) / 1e6,
    }


def main(argv: list[str]) -> None:
    seconds = float(argv[1]) if len(argv) > 1 else 2.0
    for name, value in run(seconds).items():
        print(f"{name:32} {value:14.4f}")


if __name__ == "__main__":
    main(sys.argv)
