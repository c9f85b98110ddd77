"""Encryption of integration secrets at rest (Fernet: AES-128-CBC with HMAC-SHA256).

SECRET_ENCRYPTION_KEYS is a comma-separated list: the first key encrypts, every key decrypts, so
a new key goes first and the old ones stay until `flask floyo rotate-secrets` has re-encrypted
every row. Entries that are not 44-character Fernet keys are stretched into one with SHA-256;
an empty setting derives the key from SECRET_KEY, which suits the embedded mode only.
"""

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


class SecretsUnreadable(Exception):
    """No configured key decrypts the stored secrets (a key was removed too early)."""


def _fernet(entry):
    try:
        return Fernet(entry.encode())
    except (ValueError, TypeError):
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(entry.encode()).digest()))


def _cipher():
    raw = current_app.config.get("SECRET_ENCRYPTION_KEYS") or ""
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    if not entries:
        entries = ["floyo-secrets:" + current_app.config["SECRET_KEY"]]
    return MultiFernet([_fernet(entry) for entry in entries])


def encrypt_secrets(values):
    """Encrypt a dict of secret values into one token."""
    return _cipher().encrypt(json.dumps(values, sort_keys=True).encode()).decode()


def decrypt_secrets(token):
    if not token:
        return {}
    try:
        return json.loads(_cipher().decrypt(token.encode()))
    except InvalidToken as error:
        raise SecretsUnreadable(
            "The stored secrets cannot be decrypted with SECRET_ENCRYPTION_KEYS; add the old key back to the list."
        ) from error


def rotate_token(token):
    """Re-encrypt a token with the first key; raises SecretsUnreadable when no key reads it."""
    try:
        return _cipher().rotate(token.encode()).decode()
    except InvalidToken as error:
        raise SecretsUnreadable(
            "A stored secret cannot be decrypted with any key in SECRET_ENCRYPTION_KEYS."
        ) from error
