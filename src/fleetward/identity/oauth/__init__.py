"""The embedded OAuth 2.1 authorization server.

Authlib's server core (``authlib.oauth2``) does the protocol: request parsing rules, grant
selection, client authentication, PKCE, the device grant, revocation and introspection
endpoints, RFC 9207's ``iss``. This package supplies only what Authlib leaves to the
application, and keeps every use of the untyped Authlib API inside thin adapter modules:

* :mod:`.policy` - what each client type may ever be granted (the one table every check reads);
* :mod:`.clients` - the client registry; :mod:`.adapters` - our rows as Authlib's models;
* :mod:`.http` - Starlette request -> Authlib ``OAuth2Request``, and the response back;
* :mod:`.exchange`, :mod:`.running` - per-request state, and running Authlib in ``run_sync``;
* :mod:`.server` - the per-request ``AuthorizationServer`` and its registrations;
* :mod:`.client_auth` - ``private_key_jwt`` (RFC 7523) with a durable single-use ``jti``;
* :mod:`.pkce`, :mod:`.code_grant`, :mod:`.refresh_grant`, :mod:`.machine_grant`,
  :mod:`.device`, :mod:`.grant_checks` - the grants and the checks they share;
* :mod:`.targets` - ``resource`` (RFC 8707) -> one surface, and the tenant a token carries;
* :mod:`.principal`, :mod:`.minting` - who a token is for; access and refresh tokens;
* :mod:`.authorize`, :mod:`.consent`, :mod:`.csrf`, :mod:`.pages` - the authorization
  endpoint, remembered consent, CSRF tokens and the HTML pages;
* :mod:`.device_approval` - the device page where a person approves a user code;
* :mod:`.endpoints`, :mod:`.token_endpoints`, :mod:`.inspection` - token, device
  authorization, revocation (RFC 7009) and introspection (RFC 7662);
* :mod:`.revocation` - revoking users, clients, tenants, families and tokens, durably and at
  once, and :func:`~.revocation.load_revocations` for start-up;
* :mod:`.metadata`, :mod:`.urls` - discovery (RFC 8414), the JWKS and our endpoint URLs;
* :mod:`.models`, :mod:`.hashing`, :mod:`.rows` - the used-assertion table, secret digests,
  conditional writes;
* :mod:`.client_side`, :mod:`.headless` - the client side (PKCE, assertions, a scripted
  browser for ``fleetward token``); nothing on the server's request path imports them.

Authlib runs synchronously: every call into it happens inside ``AsyncSession.run_sync``, so
its hooks use a plain ``Session`` on top of the async driver, in the request's transaction.
Anything that must await (reading the body, the login session, DPoP proofs, access-token
validation, the revocation service, audit) happens before or after that run, never in it.
"""
