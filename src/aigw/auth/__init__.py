"""Authentication: API keys, JWT, HMAC request signing, IP allow-lists.

Pure cores, one per concept, each taking ``now`` or a clock and doing no I/O:

    identity  Identity (who is calling) and the failures: Unauthenticated (401),
              Forbidden (403), each with a ``Reason`` for logs and metrics only
    keys      API key format, keyed hashing, constant-time verify, KeyCache
    jwt       JwtVerifier: HS256/RS256/ES256, iss/aud/exp/nbf, claims -> Identity
    jwks      JWKS parsing, JwksCache (refresh policy), JwksRefresher (single-flight)
    signing   HMAC-SHA256 request signatures, NonceCache against replays
    network   client address behind trusted proxies, CIDR allow-lists
"""
