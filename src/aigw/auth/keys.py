"""API keys: their format, their keyed hash, and a cache of looked-up records.

A key is ``aigw-`` followed by 43 URL-safe characters (32 random bytes, unpadded
base64): ``aigw-3q2-7wE…``. Its *prefix*, ``aigw-`` and the first 8 random characters,
is not secret: it names the key in lists, logs and the ``Identity`` (48 of its 256 bits
are shown; the other 208 still have to be guessed).

Only ``key_hash(key)`` is stored: HMAC-SHA256 keyed with a server secret, as lowercase
hex. A leaked store then yields neither keys nor hashes that can be checked offline
without the server secret. The store is looked up by hash, so the hash must be
deterministic (no per-key salt); the keys' 256 random bits make a slow hash pointless.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from typing import Final, Generic, Literal, TypeVar

KEY_PREFIX: Final = "aigw-"
KEY_RANDOM_BYTES: Final = 32
PREFIX_CHARS: Final = len(KEY_PREFIX) + 8
MIN_SERVER_SECRET_BYTES: Final = 32

_KEY_PATTERN = re.compile(r"aigw-[A-Za-z0-9_-]{43}")

R = TypeVar("R")


def new_key() -> tuple[str, str]:
    """A fresh key: ``(plaintext, prefix)``. Show the plaintext once; store its hash."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    return plaintext, key_prefix(plaintext)


def key_prefix(plaintext: str) -> str:
    """The public part that names a key: safe to log and display."""
    return plaintext[:PREFIX_CHARS]


def is_well_formed(plaintext: str) -> bool:
    """Whether ``plaintext`` has the shape of a key ``new_key`` makes.

    Reject anything else before hashing or looking up: the format is public, so this
    tells an attacker nothing about which keys exist.
    """
    return _KEY_PATTERN.fullmatch(plaintext) is not None


def key_hash(plaintext: str, server_secret: bytes) -> str:
    """HMAC-SHA256 of the key under the server secret, lowercase hex (64 characters)."""
    if len(server_secret) < MIN_SERVER_SECRET_BYTES:
        raise ValueError(f"the server secret must be at least {MIN_SERVER_SECRET_BYTES} bytes")
    # surrogatepass: any str hashes, whatever a header decoder produced.
    return hmac.digest(server_secret, plaintext.encode("utf-8", "surrogatepass"), "sha256").hex()


def verify(plaintext: str, stored_hash: str, server_secret: bytes) -> bool:
    """Whether ``plaintext`` is the key whose hash is ``stored_hash``, in constant time."""
    actual = key_hash(plaintext, server_secret).encode("ascii")
    return hmac.compare_digest(actual, stored_hash.encode("utf-8", "surrogatepass"))


class _Negative(Enum):
    NEGATIVE = "negative"


NEGATIVE: Final = _Negative.NEGATIVE
"""What ``KeyCache.get`` answers for a hash the store recently said it does not know."""

Negative = Literal[_Negative.NEGATIVE]


class KeyCache(Generic[R]):
    """Key records by key hash, each kept ``ttl_s``; misses kept ``negative_ttl_s``.

    Bounded: past ``max_entries`` records the least recently used goes; negative
    entries have their own, smaller bound (``max_negative``, oldest first) so that a
    flood of made-up keys cannot push real keys out. ``ttl_s`` bounds how long a
    revocation made elsewhere takes to be seen here; ``invalidate`` makes it immediate
    for this process. A hash is not a credential, but it is still kept out of reprs.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 60.0,
        negative_ttl_s: float = 5.0,
        max_entries: int = 100_000,
        max_negative: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (ttl_s > 0 and negative_ttl_s > 0):
            raise ValueError("ttl_s and negative_ttl_s must be > 0")
        if max_entries < 1 or max_negative < 1:
            raise ValueError("max_entries and max_negative must be >= 1")
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.max_negative = max_negative
        self._clock = clock
        self._records: OrderedDict[str, tuple[float, R]] = OrderedDict()
        self._negative: dict[str, float] = {}

    def get(self, key_hash: str) -> R | Negative | None:
        """The cached record, ``NEGATIVE`` for a known miss, or ``None``: ask the store."""
        now = self._clock()
        entry = self._records.get(key_hash)
        if entry is not None:
            if entry[0] > now:
                self._records.move_to_end(key_hash)
                return entry[1]
            del self._records[key_hash]
        expires = self._negative.get(key_hash)
        if expires is not None:
            if expires > now:
                return NEGATIVE
            del self._negative[key_hash]
        return None

    def put(self, key_hash: str, record: R) -> None:
        self._negative.pop(key_hash, None)
        self._records[key_hash] = (self._clock() + self.ttl_s, record)
        self._records.move_to_end(key_hash)
        while len(self._records) > self.max_entries:
            self._records.popitem(last=False)

    def put_negative(self, key_hash: str) -> None:
        """Remember that the store does not know this hash (never shadows a record)."""
        if key_hash in self._records:
            return
        negative = self._negative
        negative.pop(key_hash, None)
        negative[key_hash] = self._clock() + self.negative_ttl_s
        while len(negative) > self.max_negative:
            del negative[next(iter(negative))]

    def invalidate(self, key_hash: str) -> None:
        """Forget a hash (a key revoked, changed or created): the next get asks the store."""
        self._records.pop(key_hash, None)
        self._negative.pop(key_hash, None)

    def clear(self) -> None:
        self._records.clear()
        self._negative.clear()

    def __len__(self) -> int:
        return len(self._records) + len(self._negative)

    def __repr__(self) -> str:
        return (
            f"KeyCache(records={len(self._records)}, negative={len(self._negative)}, "
            f"ttl_s={self.ttl_s}, negative_ttl_s={self.negative_ttl_s})"
        )
