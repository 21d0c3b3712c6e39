"""Test support for the login pages: a browser-like client and a software authenticator.

The authenticator is a real one in software (P-256 key, "none" attestation, counters), so
WebAuthn is exercised end to end through py_webauthn's verification, not mocked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Browser:
    """An httpx client with a cookie jar and a fixed client address, like one browser."""

    def __init__(
        self, app: FastAPI, ip: str = "203.0.113.7", base_url: str = "http://testserver"
    ) -> None:
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(ip, 50_000)), base_url=base_url
        )
        self.token = ""

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.http.aclose()

    async def open_login(self, **params: str) -> httpx.Response:
        response = await self.http.get("/login", params=params)
        found = CSRF_FIELD.search(response.text)
        if found:
            self.token = found.group(1)
        return response

    async def login(self, username: str, password: str, **fields: str) -> httpx.Response:
        if not self.token:
            await self.open_login()
        data = {"csrf_token": self.token, "username": username, "password": password}
        data.update(fields)
        return await self.http.post("/login", data=data)

    async def totp(self, code: str) -> httpx.Response:
        return await self.http.post("/login/totp", data={"csrf_token": self.token, "code": code})

    async def recovery(self, code: str) -> httpx.Response:
        data = {"csrf_token": self.token, "code": code}
        return await self.http.post("/login/recovery", data=data)

    async def post_json(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"x-csrf-token": self.token}
        if body is None:
            return await self.http.post(path, headers=headers)
        return await self.http.post(path, json=body, headers=headers)

    @property
    def session_cookie(self) -> str | None:
        return self.http.cookies.get("fw_login")


@dataclass
class SoftAuthenticator:
    """A FIDO2 authenticator in software: one P-256 credential, a signature counter."""

    rp_id: str
    origin: str
    counter: int = 0
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        body = {"type": kind, "challenge": challenge, "origin": origin or self.origin}
        return json.dumps(body, separators=(",", ":")).encode()

    def _auth_data(self, flags: int, rp_id: str | None, attested: bytes = b"") -> bytes:
        rp_hash = hashlib.sha256((rp_id or self.rp_id).encode()).digest()
        return rp_hash + bytes([flags]) + struct.pack(">I", self.counter) + attested

    def register(self, options: dict[str, Any]) -> dict[str, Any]:
        """The browser's answer to navigator.credentials.create(options)."""
        client_data = self._client_data("webauthn.create", options["challenge"], None)
        attested = (
            bytes(16)  # AAGUID: none
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self._cose_key()
        )
        auth_data = self._auth_data(0x41, options["rp"]["id"], attested)  # UP | AT
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["usb"],
            },
            "clientExtensionResults": {},
        }

    def sign(
        self,
        challenge: str,
        *,
        counter: int | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
    ) -> dict[str, Any]:
        """The browser's answer to navigator.credentials.get(); the counter moves up by one
        unless told which value to claim."""
        self.counter = self.counter + 1 if counter is None else counter
        client_data = self._client_data("webauthn.get", challenge, origin)
        auth_data = self._auth_data(0x01, rp_id)  # UP
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": None,
            },
            "clientExtensionResults": {},
        }


@dataclass(frozen=True)
class Person:
    username: str
    password: str
    user_id: str
    totp_secret: str | None = None
