"""Tests for verifier/ed25519.py: ed25519-zebra made as strict as libsodium (PyNaCl).

The vectors that need a signature zebra would accept but libsodium refuses are built here
with a small pure-Python implementation of the curve (RFC 8032, 5.1), from known private
scalars.
"""

from __future__ import annotations

import hashlib

import ed25519_zebra  # type: ignore[import-untyped]
import nacl.exceptions
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.protocol.ed25519 import verify

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int]
IDENTITY: Point = (0, 1)


def _sqrt(a: int) -> int | None:
    x = pow(a, (P + 3) // 8, P)
    if (x * x - a) % P:
        x = x * SQRT_M1 % P
    return x if (x * x - a) % P == 0 else None


def recover_x(y: int, sign: int) -> int | None:
    """x of the point with coordinate y and x parity `sign`, if y is on the curve."""
    x = _sqrt((y * y - 1) * pow(D * y * y + 1, -1, P) % P)
    if x is None or (x == 0 and sign):
        return None
    return x if x & 1 == sign else P - x


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P,
            (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)


def mul(k: int, point: Point) -> Point:
    result = IDENTITY
    while k:
        if k & 1:
            result = add(result, point)
        point, k = add(point, point), k >> 1
    return result


def encode(point: Point) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def decode(data: bytes) -> Point:
    value = int.from_bytes(data, "little")
    y = value & ((1 << 255) - 1)
    x = recover_x(y % P, value >> 255)
    assert x is not None
    return x, y % P


B: Point = (recover_x(4 * pow(5, -1, P) % P, 0) or 0, 4 * pow(5, -1, P) % P)


def _small_order_points() -> list[Point]:
    """The eight points of order dividing 8: the multiples of a point of order 8."""
    root = _sqrt((1 + D) % P)
    assert root is not None
    # A point of order 8 doubles to one of order 4, whose y is 0: so y^2 = -x^2, and on the
    # curve d*y^4 + 2*y^2 - 1 = 0.
    ys = [_sqrt((-1 + sign * root) * pow(D, -1, P) % P) for sign in (1, -1)]
    y = next(y for y in ys if y is not None)
    order8 = (recover_x(y, 0) or 0, y)
    return [mul(k, order8) for k in range(8)]


SMALL_ORDER = _small_order_points()
ORDER_8 = SMALL_ORDER[1]


def scalar(seed: bytes) -> int:
    """The private scalar a of an RFC 8032 seed (clamped first half of SHA-512)."""
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return int.from_bytes(h, "little")


def challenge(r: bytes, a: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % L


def sign_with(a: int, public: bytes, r_point: Point, r: int, message: bytes) -> bytes:
    """A signature (R, S = r + k*a) with a chosen R whose B-part has discrete log r."""
    r_bytes = encode(r_point)
    s = (r + challenge(r_bytes, public, message) * a) % L
    return r_bytes + s.to_bytes(32, "little")


def nacl_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError):
        return False
    return True


SEED = bytes(range(32))
KEY = nacl.signing.SigningKey(SEED)
PUBLIC = bytes(KEY.verify_key)
A_SCALAR = scalar(SEED)
MESSAGE = b"tlog/release/v1\n" + b'{"kind":"release/v1"}'


def test_the_pure_python_curve_matches_pynacl() -> None:
    assert encode(mul(A_SCALAR, B)) == PUBLIC
    assert all(mul(8, t) == IDENTITY for t in SMALL_ORDER)
    assert len({encode(t) for t in SMALL_ORDER}) == 8


@pytest.mark.parametrize("message", [b"", b"x", MESSAGE, bytes(range(256)) * 40])
def test_valid_signatures_verify(message: bytes) -> None:
    for seed in (SEED, bytes(32), b"\xff" * 32):
        key = nacl.signing.SigningKey(seed)
        signature = key.sign(message).signature
        assert verify(bytes(key.verify_key), message, signature)


def test_every_single_bit_flip_fails() -> None:
    message = MESSAGE[:40]
    signature = KEY.sign(message).signature
    assert verify(PUBLIC, message, signature)

    def flips(data: bytes) -> list[bytes]:
        return [data[:i // 8] + bytes([data[i // 8] ^ 1 << i % 8]) + data[i // 8 + 1:]
                for i in range(8 * len(data))]

    assert not any(verify(PUBLIC, message, s) for s in flips(signature))
    assert not any(verify(PUBLIC, m, signature) for m in flips(message))
    assert not any(verify(k, message, signature) for k in flips(PUBLIC))


@pytest.mark.parametrize(("public", "signature"), [(bytes(31), bytes(64)), (PUBLIC, bytes(63)),
                                                   (PUBLIC, bytes(65)), (bytes(33), bytes(64))])
def test_wrong_sizes_are_refused(public: bytes, signature: bytes) -> None:
    assert not verify(public, MESSAGE, signature)


def test_non_canonical_s_is_refused() -> None:
    signature = KEY.sign(MESSAGE).signature
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    assert not nacl_verify(PUBLIC, MESSAGE, malleated)
    assert not verify(PUBLIC, MESSAGE, malleated)


def _small_order_r_encodings() -> list[bytes]:
    """Every encoding libsodium's ge25519_has_small_order refuses, and more: each small-order
    point with both sign bits, and y = p, p + 1 (non-canonical 0 and 1)."""
    encodings = set()
    for _, y in SMALL_ORDER:
        for y_value in (y, y + P) if y + P < 2**255 else (y,):
            for sign in (0, 1):
                encodings.add((y_value | sign << 255).to_bytes(32, "little"))
    return sorted(encodings)


@pytest.mark.parametrize("r_bytes", _small_order_r_encodings(), ids=lambda b: b.hex()[:8])
def test_small_order_r_is_refused_although_zebra_accepts_it(r_bytes: bytes) -> None:
    # With R of small order and S = k*a, [8]R = O = [8]([S]B - [k]A): zebra's cofactored
    # equation holds for every such R it can decode, and libsodium's refuses it outright.
    s = challenge(r_bytes, PUBLIC, MESSAGE) * A_SCALAR % L
    signature = r_bytes + s.to_bytes(32, "little")
    assert ed25519_zebra.ed_verify(signature, MESSAGE, PUBLIC)  # ZIP-215 decodes them all
    assert not nacl_verify(PUBLIC, MESSAGE, signature)
    assert not verify(PUBLIC, MESSAGE, signature)


def test_identity_r_is_refused() -> None:
    r_bytes = bytes([1]) + bytes(31)
    s = challenge(r_bytes, PUBLIC, MESSAGE) * A_SCALAR % L
    signature = r_bytes + s.to_bytes(32, "little")
    assert ed25519_zebra.ed_verify(signature, MESSAGE, PUBLIC)
    assert not nacl_verify(PUBLIC, MESSAGE, signature)
    assert not verify(PUBLIC, MESSAGE, signature)


@pytest.mark.parametrize("point", range(8))
def test_small_order_public_key_is_refused(point: int) -> None:
    # Under a small-order A, [S]B = R works for any message: S = r, R = [r]B.
    public = encode(SMALL_ORDER[point])
    r = 12345
    signature = encode(mul(r, B)) + r.to_bytes(32, "little")
    assert ed25519_zebra.ed_verify(signature, MESSAGE, public)
    assert not nacl_verify(public, MESSAGE, signature)
    assert not verify(public, MESSAGE, signature)


def test_non_canonical_public_key_is_refused() -> None:
    # y = p + k encodes the same point as y = k; pick the first such k on the curve.
    k = next(k for k in range(2, 19) if recover_x(k, 0) is not None)
    public = (P + k).to_bytes(32, "little")
    r = 777
    signature = encode(mul(r, B)) + r.to_bytes(32, "little")
    assert not nacl_verify(public, MESSAGE, signature)
    assert not verify(public, MESSAGE, signature)
    assert not verify(public, MESSAGE, KEY.sign(MESSAGE).signature)


def test_non_canonical_r_is_refused() -> None:
    # R with y >= p never equals libsodium's canonical [S]B - [k]A; zebra decodes it.
    k = next(k for k in range(2, 19) if recover_x(k, 0) is not None)
    signature = (P + k).to_bytes(32, "little") + KEY.sign(MESSAGE).signature[32:]
    assert not nacl_verify(PUBLIC, MESSAGE, signature)
    assert not verify(PUBLIC, MESSAGE, signature)


def test_mixed_order_public_key_is_refused() -> None:
    # The second documented difference: A = [a]B + T is refused here (not in the prime-order
    # subgroup); zebra's cofactored equation accepts signatures made with a.
    public = encode(add(mul(A_SCALAR, B), ORDER_8))
    signature = sign_with(A_SCALAR, public, mul(99, B), 99, MESSAGE)
    assert ed25519_zebra.ed_verify(signature, MESSAGE, public)
    assert not verify(public, MESSAGE, signature)


def test_torsion_component_in_r_is_the_documented_difference() -> None:
    # The first documented difference: R = [r]B + T with S = r + k*a (only the holder of a
    # can make it) passes the cofactored check but not libsodium's cofactorless one.
    r = 4242
    signature = sign_with(A_SCALAR, PUBLIC, add(mul(r, B), ORDER_8), r, MESSAGE)
    assert not nacl_verify(PUBLIC, MESSAGE, signature)
    assert verify(PUBLIC, MESSAGE, signature)
    # ... whereas the same construction without the torsion point is an ordinary signature.
    plain = sign_with(A_SCALAR, PUBLIC, mul(r, B), r, MESSAGE)
    assert nacl_verify(PUBLIC, MESSAGE, plain)
    assert verify(PUBLIC, MESSAGE, plain)


def test_public_key_validity_is_memoized() -> None:
    from verifier.protocol.ed25519 import _valid_public_key

    _valid_public_key.cache_clear()
    for _ in range(3):
        assert verify(PUBLIC, MESSAGE, KEY.sign(MESSAGE).signature)
    assert _valid_public_key.cache_info().hits >= 2


# -- differential tests against PyNaCl ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=600))
def test_agrees_with_pynacl_on_valid_signatures(seed: bytes, message: bytes) -> None:
    key = nacl.signing.SigningKey(seed)
    public, signature = bytes(key.verify_key), key.sign(message).signature
    assert verify(public, message, signature) is nacl_verify(public, message, signature) is True


@settings(max_examples=500, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=100),
       signature=st.binary(min_size=64, max_size=64))
def test_agrees_with_pynacl_on_random_signatures(seed: bytes, message: bytes,
                                                 signature: bytes) -> None:
    public = bytes(nacl.signing.SigningKey(seed).verify_key)
    assert verify(public, message, signature) == nacl_verify(public, message, signature)


@settings(max_examples=500, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=100),
       position=st.integers(0, 95), value=st.integers(0, 255),
       reduce_s=st.booleans())
def test_agrees_with_pynacl_on_corrupted_signatures_and_keys(
        seed: bytes, message: bytes, position: int, value: int, reduce_s: bool) -> None:
    key = nacl.signing.SigningKey(seed)
    data = bytearray(bytes(key.verify_key) + key.sign(message).signature)
    data[position] = value
    public, signature = bytes(data[:32]), bytes(data[32:])
    if reduce_s:  # keep S canonical so that the curve checks, not the S check, decide
        s = int.from_bytes(signature[32:], "little") % L
        signature = signature[:32] + s.to_bytes(32, "little")
    assert verify(public, message, signature) == nacl_verify(public, message, signature)


@settings(max_examples=300, deadline=None)
@given(public=st.binary(min_size=32, max_size=32), message=st.binary(max_size=64),
       signature=st.binary(min_size=64, max_size=64))
def test_agrees_with_pynacl_on_random_keys(public: bytes, message: bytes,
                                           signature: bytes) -> None:
    assert verify(public, message, signature) == nacl_verify(public, message, signature)
