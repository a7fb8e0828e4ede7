"""Ed25519 verification of entry signatures: ed25519-zebra's speed, libsodium's strictness.

PyNaCl (libsodium) verifies ~11-16k signatures/s per core; ed25519-zebra (the Zcash
Foundation's Rust crate, via ``py-ed25519-zebra-bindings``) ~18-20k/s. zebra implements the
ZIP-215 rules, which are looser than libsodium's: it uses the cofactored equation
[8]R = [8]([S]B - [k]A) and accepts non-canonical encodings of A and R and small-order A
and R. :func:`verify` first applies, cheaply and in this order, the rules that make
libsodium (``crypto_sign_ed25519_verify_detached``) stricter:

- S must be canonical: S < L (libsodium's ``sc25519_is_canonical``);
- R must not be a small-order point: libsodium's ``ge25519_has_small_order`` blacklist,
  reproduced in ``_SMALL_ORDER_Y``;
- R must be canonically encoded (y < p): libsodium compares the canonical encoding of
  [S]B - [k]A with R's bytes, so it never accepts a non-canonical R. The other
  non-canonical form, x = 0 with the sign bit set, only exists for y = 1 and y = p - 1,
  which are small-order points and already refused;
- A must pass ``crypto_core_ed25519_is_valid_point``: canonical, on the curve, not of small
  order, and in the prime-order subgroup. Remembered per key, since publishers reuse keys.

Remaining differences from libsodium, both harmless:

1. A signature whose R has a small-order component (R = [r]B + T, T a non-zero torsion
   point, S = r + k*a) passes zebra's cofactored equation but not libsodium's cofactorless
   one. Making it needs the private scalar a, so only the key's holder can produce such a
   signature: it is no forgery, and no third party can turn a valid signature into another
   one this way either (k = H(R || A || M) changes with R, so S would have to change too).
2. A public key with a small-order component (A = [a]B + T, which no seed derives) is
   refused here, whereas libsodium only checks that A is canonical and not of small order
   and so accepts some signatures under such a key. This side is stricter.

Note and checkpoint signatures stay on PyNaCl (verifier/protocol/note.py); this module is for the
per-entry publisher signatures an auditor checks by the million.
"""

from __future__ import annotations

import functools

import ed25519_zebra  # type: ignore[import-untyped]  # ships no type information
import nacl.bindings

__all__ = ["verify"]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

_P = 2**255 - 19
"""The field prime."""
_L = 2**252 + 27742317777372353535851937790883648493
"""The order of the prime-order subgroup (RFC 8032, 5.1)."""
_Y_MASK = (1 << 255) - 1
"""The y coordinate of an encoded point: its 255 low bits (bit 255 is the sign of x)."""

# libsodium's ge25519_has_small_order compares the encoding, with the sign bit cleared,
# against these y values: 0 (order 4), 1 (order 1, the identity), the two y coordinates of
# the points of order 8, p - 1 (order 2), and p and p + 1 (non-canonical 0 and 1). p and
# p + 1 are already refused as y >= p, so they are not repeated here. Together these y
# values cover all eight points of small order, with either sign bit.
_SMALL_ORDER_Y = frozenset({
    0,
    1,
    2707385501144840649318225287225658788936804267575313519463743609750303402022,
    55188659117513257062467267217118295137698188065244968500265048394206261417927,
    _P - 1,
})


@functools.lru_cache(maxsize=4096)
def _valid_public_key(public_key: bytes) -> bool:
    """Canonical, on the curve, not of small order and in the prime-order subgroup."""
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(public_key))


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` under ``public_key``.

    Accepts what libsodium accepts, except for the harmless differences described in the
    module docstring.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    public_key, signature = bytes(public_key), bytes(signature)
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    r_y = int.from_bytes(signature[:32], "little") & _Y_MASK
    if r_y >= _P or r_y in _SMALL_ORDER_Y:
        return False
    if not _valid_public_key(public_key):
        return False
    return bool(ed25519_zebra.ed_verify(signature, bytes(message), public_key))
