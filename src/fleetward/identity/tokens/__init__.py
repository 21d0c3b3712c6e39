"""Token core of the embedded OAuth 2.1 authorization server.

This package owns the cryptographic and validation side of tokens; it decides nothing about
*who* may get a token (the Authlib grant wiring does) or *what* a token allows (authz does).

* :mod:`.keys`, :mod:`.keyfiles` - ES256 signing keyring: rotation, JWKS, encrypted storage;
* :mod:`.claims` - the RFC 9068 access token claims as a typed value;
* :mod:`.issuing` - :class:`AccessTokenIssuer`, signing ``at+jwt`` access tokens;
* :mod:`.access` - :class:`AccessTokenValidator`, which every API router calls;
* :mod:`.cache` - the bounded verified-token cache the validator uses;
* :mod:`.revocation` - the :class:`RevocationChecker` protocol and an in-memory store;
* :mod:`.dpop`, :mod:`.replay`, :mod:`.htu` - RFC 9449 DPoP proof verification;
* :mod:`.dpop_client` - making DPoP proofs, for clients, the CLI, the simulator and tests;
* :mod:`.compact` - strict JWS compact parsing shared by both validators;
* :mod:`.errors` - :class:`InvalidToken` and :class:`InvalidDpopProof` with stable reasons.

JOSE library: joserfc (https://jose.authlib.org), the maintained successor of
``authlib.jose`` by the same author, does the JWS signature maths (its ES256 and Ed25519
algorithm models) and JWK handling (import, export, RFC 7638 thumbprints). It only ever runs
on input that already passed our stricter parsing in :mod:`.compact`, with an algorithm and a
key we chose: its permissive features (``none``, keys from headers, RFC 7797 detached
payloads, lenient JSON) never come into play.
"""

from fleetward.identity.tokens.access import AccessTokenValidator
from fleetward.identity.tokens.claims import AccessTokenClaims, SubjectType
from fleetward.identity.tokens.dpop import DpopVerifier
from fleetward.identity.tokens.errors import InvalidDpopProof, InvalidToken
from fleetward.identity.tokens.issuing import AccessTokenIssuer, IssuedToken
from fleetward.identity.tokens.keys import Keyring, KeyringError, SigningKey
from fleetward.identity.tokens.replay import InMemoryReplayCache, ReplayCache
from fleetward.identity.tokens.revocation import InMemoryRevocations, RevocationChecker

__all__ = [
    "AccessTokenClaims",
    "AccessTokenIssuer",
    "AccessTokenValidator",
    "DpopVerifier",
    "InMemoryReplayCache",
    "InMemoryRevocations",
    "InvalidDpopProof",
    "InvalidToken",
    "IssuedToken",
    "Keyring",
    "KeyringError",
    "ReplayCache",
    "RevocationChecker",
    "SigningKey",
    "SubjectType",
]
