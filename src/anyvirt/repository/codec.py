"""How a repository's objects are sealed: zstd, then (for an encrypted repository) AES-GCM.

Every object (a chunk, a disk index, a restore point) goes through the same
codec, so one function decides what is on the storage. A chunk's name is the
sha256 of its plaintext, or, in an encrypted repository, an HMAC-SHA256 of it
under a key only the passphrase opens: names must not let someone holding the
storage confirm a guess of the content.

Encryption keeps nothing secret in the repository. ``config.json`` holds the
KDF's salt and parameters and the data key wrapped (AES-GCM) by the key the
passphrase derives; a wrong passphrase fails to unwrap it, loudly. Each object
is ``nonce || ciphertext`` with the object's kind and name as associated data,
so an object copied over another's name fails to open instead of being
believed. Unencrypted objects carry zstd's own frame checksum, and every chunk
is re-hashed against its name when read, so damage is found either way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import zstandard
from attrs import frozen
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from anyvirt.errors import AuthenticationFailed, InvalidSpec
from anyvirt.target import Secret

LEVEL = 3  # zstd's default: about 1 GB/s per core here, most of level 19's ratio on disks
NONCE = 12
KEY_BYTES = 32
# scrypt at 2**15 x 8 takes 32 MiB and about 0.1 s: paid once per open, not per object
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
WRAP_CONTEXT = b"anyvirt-repository data key"
# decoded objects are bounded: a chunk is at most the chunk size, an index or point far less
MAX_OBJECT = 256 * 1024 * 1024


class Damaged(Exception):
    """An object that does not decode (bad frame, failed authentication): verify's finding."""


@frozen
class Keys:
    """The data keys of an encrypted repository (never stored, never shown)."""

    cipher: bytes
    naming: bytes

    def __repr__(self) -> str:
        return "Keys(<hidden>)"


class Codec:
    """Seal and open objects, and name chunks, for one repository."""

    def __init__(self, keys: Keys | None) -> None:
        self._keys = keys
        self._aead = AESGCM(keys.cipher) if keys is not None else None

    def __repr__(self) -> str:
        return f"Codec(encrypted={self.encrypted})"

    @property
    def encrypted(self) -> bool:
        return self._keys is not None

    def chunk_id(self, plain: bytes | memoryview) -> str:
        if self._keys is None:
            return hashlib.sha256(plain).hexdigest()
        return hmac.new(self._keys.naming, plain, hashlib.sha256).hexdigest()

    def seal(self, kind: str, name: str, plain: bytes | memoryview) -> bytes:
        # a fresh compressor per call: zstandard's objects are not safe across threads
        packed = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).compress(plain)
        if self._aead is None:
            return packed
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, packed, _aad(kind, name))

    def open(self, kind: str, name: str, sealed: bytes) -> bytes:
        """The plaintext of an object; ``Damaged`` if it does not decode."""
        packed = sealed
        if self._aead is not None:
            try:
                packed = self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], _aad(kind, name))
            except (InvalidTag, ValueError) as exc:
                raise Damaged(f"{kind} {name} fails authentication") from exc
        try:
            return zstandard.ZstdDecompressor().decompress(packed, max_output_size=MAX_OBJECT)
        except zstandard.ZstdError as exc:
            raise Damaged(f"{kind} {name} is not a valid zstd frame: {exc}") from exc


def _aad(kind: str, name: str) -> bytes:
    return f"{kind}/{name}".encode()


def new_encryption(passphrase: Secret) -> tuple[dict[str, Any], Keys]:
    """Fresh keys for a new repository: the config entry to store, and the keys."""
    salt = os.urandom(16)
    data_key = os.urandom(2 * KEY_BYTES)
    wrapping = _derive(passphrase, salt, SCRYPT)
    nonce = os.urandom(NONCE)
    wrapped = nonce + AESGCM(wrapping).encrypt(nonce, data_key, WRAP_CONTEXT)
    entry = {"cipher": "aes-256-gcm", "naming": "hmac-sha256",
             "kdf": {"name": "scrypt", **SCRYPT, "salt": _b64(salt)},
             "wrapped_key": _b64(wrapped)}
    return entry, _split(data_key)


def open_encryption(entry: object, passphrase: Secret) -> Keys:
    """The keys of an existing repository; ``AuthenticationFailed`` for a wrong passphrase."""
    try:
        assert isinstance(entry, dict)
        kdf = entry["kdf"]
        if entry["cipher"] != "aes-256-gcm" or kdf["name"] != "scrypt":
            raise InvalidSpec(f"repository encryption {entry['cipher']}/{kdf['name']} is not "
                              "one this anyvirt knows")
        params = {k: int(kdf[k]) for k in ("n", "r", "p")}
        if not (2**10 <= params["n"] <= 2**22 and 1 <= params["r"] <= 32 and 1 <= params["p"] <= 16):
            raise InvalidSpec("repository config: scrypt parameters out of range")
        salt = base64.b64decode(kdf["salt"], validate=True)
        wrapped = base64.b64decode(entry["wrapped_key"], validate=True)
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InvalidSpec):
            raise
        raise InvalidSpec("repository config: the encryption entry is malformed") from None
    wrapping = _derive(passphrase, salt, params)
    try:
        data_key = AESGCM(wrapping).decrypt(wrapped[:NONCE], wrapped[NONCE:], WRAP_CONTEXT)
    except (InvalidTag, ValueError):
        raise AuthenticationFailed("the passphrase does not open this repository") from None
    return _split(data_key)


def _derive(passphrase: Secret, salt: bytes, params: dict[str, int]) -> bytes:
    kdf = Scrypt(salt=salt, length=KEY_BYTES, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(passphrase.reveal().encode())


def _split(data_key: bytes) -> Keys:
    return Keys(cipher=data_key[:KEY_BYTES], naming=data_key[KEY_BYTES:])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


__all__ = ["Codec", "Damaged", "Keys", "new_encryption", "open_encryption"]
