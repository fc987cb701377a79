"""Token keys (server/tokens.py): secrets and rotation, PEM public keys, JWKS files, aud/iss.

Keys are generated here (cryptography); tokens are signed by PyJWT. The last
tests start the real CLI with ``--jwt-public-key`` / ``--jwks-file`` and connect
a stock y-websocket client (Node) with an RS256 token.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from collab import Config, Forbidden, Permission, Unauthorized, cli
from collab.server.tokens import JwtAuthorizer, load_public_key
from tests.jsclient import JS_DIR, STOCK_CLIENT, require_node
from tests.server import ServerProcess

SECRET = "old-secret-" * 4  # 44 bytes
NEW_SECRET = "new-secret-" * 4
NOW = 1_000_000.0


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "ann", "exp": NOW + 60, **extra}


def public_pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_key(key: bytes, body: dict[str, Any]) -> str:
    """An HS256 token whose HMAC key is ``key`` (PyJWT refuses to make one with a PEM)."""
    signing = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
    signing += b64(json.dumps(body).encode())
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(signature)}"


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    """Two private keys of each kind, made once for the module (RSA takes a moment)."""
    return {
        "RS256": [rsa.generate_private_key(65537, 2048) for _ in range(2)],
        "ES256": [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)],
        "ES384": [ec.generate_private_key(ec.SECP384R1()) for _ in range(2)],
        "EdDSA": [ed25519.Ed25519PrivateKey.generate() for _ in range(2)],
    }


def authorizer(**kwargs: Any) -> JwtAuthorizer:
    return JwtAuthorizer(clock=lambda: NOW, **kwargs)


# -- secrets and rotation --------------------------------------------------------------


def test_every_secret_verifies_so_secrets_rotate() -> None:
    auth = authorizer(secret=[SECRET, NEW_SECRET])
    for secret in (SECRET, NEW_SECRET):
        tok = jwt.encode(claims(), secret, algorithm="HS256")
        assert auth.check(tok, "notes") == Permission("ann", True, NOW + 60)
    other = jwt.encode(claims(), "third-secret-" * 4, algorithm="HS256")
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        auth.check(other, "notes")
    with pytest.raises(ValueError, match="32 bytes"):
        JwtAuthorizer([SECRET, "short"])
    with pytest.raises(ValueError, match="needs a secret"):
        JwtAuthorizer([])


def test_the_cli_takes_several_secrets_from_flags_or_the_variable(monkeypatch) -> None:
    def config(*argv: str) -> Config:
        return cli._config(cli._parser().parse_args(["serve", *argv]))

    flags = config("--jwt-secret", SECRET, "--jwt-secret", NEW_SECRET)
    assert flags.jwt_secrets == (SECRET, NEW_SECRET)
    monkeypatch.setenv("COLLAB_JWT_SECRET", f"{SECRET},{NEW_SECRET}")
    assert config().jwt_secrets == (SECRET, NEW_SECRET)
    assert config("--jwt-secret", NEW_SECRET).jwt_secrets == (NEW_SECRET,)  # flags win
    monkeypatch.setenv("COLLAB_JWT_SECRET", f"{SECRET},short")
    with pytest.raises(SystemExit, match="at least 32 bytes"):
        config()
    monkeypatch.delenv("COLLAB_JWT_SECRET")
    # An embedder's Config(jwt_secret=...) still turns it on, next to any others.
    both = JwtAuthorizer.from_config(Config(jwt_secret=SECRET, jwt_secrets=(NEW_SECRET,)))
    assert both is not None and len(both.keys) == 2
    assert JwtAuthorizer.from_config(Config()) is None


# -- public keys: the algorithm comes from the key ---------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384", "EdDSA"])
def test_each_algorithm_is_accepted_with_its_key_only(keys, alg: str) -> None:
    right, wrong = keys[alg]
    assert load_public_key(public_pem(right)).algorithm == alg  # derived from the key type
    auth = authorizer(public_keys=[public_pem(right)])
    tok = jwt.encode(claims(mode="ro", docs=["team/*"]), right, algorithm=alg)
    assert auth.check(tok, "team/plan") == Permission("ann", False, NOW + 60)
    with pytest.raises(Forbidden):
        auth.check(tok, "elsewhere")
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        auth.check(jwt.encode(claims(), wrong, algorithm=alg), "team/plan")


def test_alg_confusion_and_unlisted_algorithms_are_refused(keys) -> None:
    private = keys["RS256"][0]
    pem = public_pem(private)
    confused = hs256_with_key(pem, claims())  # "signed" with the public key as an HMAC secret
    with pytest.raises(Unauthorized, match="alg value"):  # no key verifies HS256
        authorizer(public_keys=[pem]).check(confused, "notes")
    with pytest.raises(Unauthorized, match="Signature"):  # only the secret does
        authorizer(secret=SECRET, public_keys=[pem]).check(confused, "notes")
    auth = authorizer(public_keys=[pem])
    # Same RSA key, but an algorithm the key was not given: the header does not decide.
    for alg in ("RS512", "PS256"):
        with pytest.raises(Unauthorized, match="alg value"):
            auth.check(jwt.encode(claims(), private, algorithm=alg), "notes")
    with pytest.raises(Unauthorized, match="alg value"):
        auth.check(jwt.encode(claims(), keys["ES256"][0], algorithm="ES256"), "notes")
    with pytest.raises(Unauthorized, match="alg value"):  # a secret-only server: no RS256
        authorizer(secret=SECRET).check(jwt.encode(claims(), private, algorithm="RS256"), "n")
    none = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{none}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(Unauthorized, match="alg value"):
        auth.check(unsigned, "notes")


def test_unusable_public_keys_are_refused(keys) -> None:
    private_pem = keys["RS256"][0].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="private key"):
        load_public_key(private_pem)
    with pytest.raises(ValueError, match="2048 bits"):
        load_public_key(public_pem(rsa.generate_private_key(65537, 1024)))
    with pytest.raises(ValueError, match="unsupported key type"):
        load_public_key(public_pem(ec.generate_private_key(ec.SECP256K1())))
    with pytest.raises(ValueError):
        load_public_key(b"not a key")


def test_a_certificate_gives_its_public_key(keys) -> None:
    private = keys["ES256"][0]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    auth = authorizer(public_keys=[cert.public_bytes(serialization.Encoding.PEM)])
    assert auth.check(jwt.encode(claims(), private, algorithm="ES256"), "notes").user == "ann"


# -- JWKS: keys chosen by kid, the file re-read when it changes ---------------------------


def jwk(private: Any, kid: str, **extra: Any) -> dict[str, Any]:
    kind = {
        rsa.RSAPrivateKey: RSAAlgorithm,
        ec.EllipticCurvePrivateKey: ECAlgorithm,
        ed25519.Ed25519PrivateKey: OKPAlgorithm,
    }
    algorithm = next(a for t, a in kind.items() if isinstance(private, t))
    return {**algorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid, **extra}


def write_jwks(path: Path, *entries: dict[str, Any]) -> None:
    """Replace the file the way a key rotation job would: write aside, then rename."""
    aside = path.with_suffix(".tmp")
    aside.write_text(json.dumps({"keys": list(entries)}))
    os.replace(aside, path)


def test_jwks_keys_are_chosen_by_kid(keys, tmp_path: Path) -> None:
    a, other_rsa = keys["RS256"]
    b = keys["ES256"][0]
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(a, "a"), jwk(b, "b", use="sig"), jwk(keys["EdDSA"][0], "enc", use="enc"))
    auth = authorizer(jwks_file=str(path))
    assert {k.kid for k in auth.keys + auth.jwks.keys} == {"a", "b"}  # the "enc" key skipped
    for private, alg, kid in ((a, "RS256", "a"), (b, "ES256", "b")):
        assert auth.check(jwt.encode(claims(), private, alg, headers={"kid": kid}), "n").user
    assert auth.check(jwt.encode(claims(), a, "RS256"), "n").user == "ann"  # no kid: tried
    with pytest.raises(Unauthorized, match="no key has this kid"):
        auth.check(jwt.encode(claims(), a, "RS256", headers={"kid": "b"}), "n")
    with pytest.raises(Unauthorized, match="no key has this kid"):
        auth.check(jwt.encode(claims(), a, "RS256", headers={"kid": "gone"}), "n")
    with pytest.raises(Unauthorized, match="Signature"):
        auth.check(jwt.encode(claims(), other_rsa, "RS256", headers={"kid": "a"}), "n")


def test_the_jwks_file_is_reread_when_it_changes(keys, tmp_path: Path, caplog) -> None:
    old, new = keys["RS256"]
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(old, "2025"))
    auth = authorizer(jwks_file=str(path))
    old_token = jwt.encode(claims(), old, "RS256", headers={"kid": "2025"})
    new_token = jwt.encode(claims(), new, "RS256", headers={"kid": "2026"})
    assert auth.check(old_token, "n").user == "ann"
    with pytest.raises(Unauthorized):
        auth.check(new_token, "n")

    write_jwks(path, jwk(old, "2025"), jwk(new, "2026"))  # rotation: both for a while
    assert auth.check(new_token, "n").user == auth.check(old_token, "n").user == "ann"
    write_jwks(path, jwk(new, "2026"))  # the old key retired
    assert auth.check(new_token, "n").user == "ann"
    with pytest.raises(Unauthorized, match="no key has this kid"):
        auth.check(old_token, "n")

    with caplog.at_level(logging.ERROR, logger="collab.auth"):
        path.write_text('{"keys": [')  # a broken write: the keys in use stay
        assert auth.check(new_token, "n").user == "ann"
        path.unlink()
        assert auth.check(new_token, "n").user == "ann"
    assert "is invalid" in caplog.text and "cannot read" in caplog.text
    write_jwks(path, jwk(old, "2025"))
    assert auth.check(old_token, "n").user == "ann"


def test_a_jwks_file_without_usable_public_keys_is_refused(keys, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    for entries in (
        [{"kty": "oct", "k": b64(b"x" * 40), "kid": "s"}],  # HS256 only with --jwt-secret
        [RSAAlgorithm.to_jwk(keys["RS256"][0], as_dict=True)],  # a private key
    ):
        write_jwks(path, *entries)
        with pytest.raises(ValueError, match="no usable signing public key"):
            JwtAuthorizer(jwks_file=str(path))
    path.write_text("[]")
    with pytest.raises(ValueError, match="cannot load"):
        JwtAuthorizer(jwks_file=str(path))
    with pytest.raises(ValueError, match="cannot load"):
        JwtAuthorizer(jwks_file=str(tmp_path / "missing.json"))


# -- audience and issuer ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("audience", "issuer", "extra", "refusal"),
    [
        (None, None, {}, None),
        (None, None, {"aud": "someone"}, "audience"),  # meant for another service
        (None, None, {"iss": "anyone"}, None),  # no issuer set: not checked
        ("collab", None, {"aud": "collab"}, None),
        ("collab", None, {"aud": ["wiki", "collab"]}, None),
        ("collab", None, {"aud": "wiki"}, "Audience doesn.t match"),
        ("collab", None, {}, '"aud"'),
        (None, "https://idp", {"iss": "https://idp"}, None),
        (None, "https://idp", {"iss": "https://evil"}, "issuer"),
        (None, "https://idp", {}, '"iss"'),
        ("collab", "https://idp", {"aud": "collab", "iss": "https://idp"}, None),
        ("collab", "https://idp", {"aud": "collab", "iss": "x"}, "issuer"),
    ],
)
def test_audience_and_issuer(audience, issuer, extra, refusal: str | None) -> None:
    auth = authorizer(secret=SECRET, audience=audience, issuer=issuer)
    tok = jwt.encode(claims(**extra), SECRET, algorithm="HS256")
    if refusal is None:
        assert auth.check(tok, "notes").user == "ann"
    else:
        with pytest.raises(Unauthorized, match=refusal):
            auth.check(tok, "notes")


def test_bad_key_options_stop_the_cli(tmp_path: Path) -> None:
    def config(*argv: str) -> Config:
        return cli._config(cli._parser().parse_args(["serve", *argv]))

    with pytest.raises(SystemExit, match=r"cannot use the public key .*missing\.pem"):
        config("--jwt-public-key", str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(SystemExit, match="cannot use the public key"):
        config("--jwt-public-key", str(tmp_path / "junk.pem"))
    with pytest.raises(SystemExit, match="cannot load JWKS file"):
        config("--jwks-file", str(tmp_path / "missing.json"))
    with pytest.raises(SystemExit, match="need a key"):
        config("--jwt-audience", "collab")


# -- a live server ----------------------------------------------------------------------


def run_stock_client(url: str, room: str, token: str) -> list[dict[str, Any]]:
    """The stock y-websocket client until the server closes it (the token expires)."""
    node = require_node()
    result = subprocess.run(
        [node, "--input-type=module", "-e", STOCK_CLIENT, url, room, token],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def put(server: ServerProcess, name: str, text: str, token: str) -> int:
    request = urllib.request.Request(
        f"{server.url}/api/docs/{name}/text",
        data=text.encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def test_a_server_with_a_public_key_admits_a_stock_client_with_rs256(keys, tmp_path) -> None:
    require_node()
    private = keys["RS256"][0]
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(public_pem(private))
    args = ("--jwt-public-key", str(pem), "--jwt-audience", "collab")
    with ServerProcess(tmp_path / "data", *args) as server:

        def rs256(**extra: Any) -> str:
            body = {"sub": "node", "aud": "collab", "exp": time.time() + 3, **extra}
            return jwt.encode(body, private, algorithm="RS256")

        assert put(server, "notes", "signed by the issuer", rs256()) == 204
        events = run_stock_client(server.ws, "notes", rs256(docs=["notes"]))
        assert events[0] == {"event": "synced", "text": "signed by the issuer"}
        assert events[-1] == {"event": "close", "code": 4401, "reason": "token expired"}
        hs256 = jwt.encode({"exp": time.time() + 60}, SECRET, algorithm="HS256")
        assert server.get(f"/api/docs/notes/text?token={hs256}")[0] == 401
        assert server.get(f"/api/docs/notes/text?token={rs256(aud='wiki')}")[0] == 401
        server.stop()


def test_a_server_with_a_jwks_file_rotates_keys_without_a_restart(keys, tmp_path) -> None:
    old, new = keys["RS256"]
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(old, "old"))

    def token(private: Any, kid: str) -> str:
        body = {"sub": kid, "exp": time.time() + 60}
        return jwt.encode(body, private, algorithm="RS256", headers={"kid": kid})

    with ServerProcess(tmp_path / "data", "--jwks-file", str(path)) as server:
        assert put(server, "notes", "x", token(old, "old")) == 204
        assert server.get(f"/api/docs/notes/text?token={token(new, 'new')}")[0] == 401
        write_jwks(path, jwk(new, "new"))
        assert server.get(f"/api/docs/notes/text?token={token(new, 'new')}") == (200, b"x")
        assert server.get(f"/api/docs/notes/text?token={token(old, 'old')}")[0] == 401
        server.stop()
    assert "reloaded: 1 keys" in server.output()
