"""TLS, mutual TLS and bearer tokens on a real server, with certificates made in the test.

Real servers on ephemeral loopback ports (start_in_thread), real varfx clients; one real
``varfx serve`` subprocess for SIGHUP. A TLS/plaintext mismatch must fail within seconds
with a message saying which side speaks what (the CLI's retry policy would otherwise retry
for about a minute).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.tls_certs import PKI, make_pki
from varfx.client import AsyncClient, Client, RetryPolicy
from varfx.client._transport import is_loopback_target, target_addresses
from varfx.client.errors import InsecureTransportError, VarfxError
from varfx.core.hosts import is_loopback_host
from varfx.server import ServerConfig, start_in_thread
from varfx.server.auth import TokenFileError, TokenStore, read_tokens
from varfx.server.config import ConfigError, load_config
from varfx.server.tls import TLSConfigError, server_credentials

#: the CLI's policy: 12 attempts, 0.25 s doubling to 10 s (about a minute of retries)
PATIENT = RetryPolicy(max_attempts=12, initial_backoff=0.25, max_backoff=10.0)
FAST_ENOUGH_S = 5.0
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def variant(genome_seqs: dict[str, str]) -> list[tuple[str, int, str, str]]:
    """One SNV whose REF matches the test genome (1-based position 100)."""
    ref = genome_seqs["chr1"][99]
    return [("chr1", 100, ref, "C" if ref != "C" else "G")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _config(model_repo: Path, genome_fa: Path, **kwargs: Any) -> ServerConfig:
    return ServerConfig(
        model_repo=model_repo,
        genome=genome_fa,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        max_batch=8,
        max_delay_ms=1.0,
        default_model="tok",
        warmup_batch_sizes=(1,),
        **kwargs,
    )


@pytest.fixture(scope="module")
def tls_server(model_repo: Path, genome_fa: Path, pki: PKI) -> Iterator[Any]:
    config = _config(
        model_repo, genome_fa, tls_cert=pki.server_cert, tls_key=pki.server_key, health_port=0
    )
    with start_in_thread(config) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_server(model_repo: Path, genome_fa: Path, pki: PKI) -> Iterator[Any]:
    config = _config(
        model_repo,
        genome_fa,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca,
    )
    with start_in_thread(config) as running:
        yield running


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text("# team tokens\n\n  alpha-token-1  \nbeta-token-2\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def auth_server(model_repo: Path, genome_fa: Path, tokens_file: Path) -> Iterator[Any]:
    with start_in_thread(_config(model_repo, genome_fa, auth_tokens_file=tokens_file)) as s:
        yield s


def _fails_fast(make: Any, call: Any) -> VarfxError:
    start = time.monotonic()
    with make() as client, pytest.raises(VarfxError) as info:
        call(client)
    elapsed = time.monotonic() - start
    assert elapsed < FAST_ENOUGH_S, f"took {elapsed:.1f} s: {info.value}"
    return info.value


# -- TLS -------------------------------------------------------------------------------------


def test_tls_end_to_end(tls_server: Any, pki: PKI, variant: list[Any]) -> None:
    for target in (tls_server.target, f"localhost:{tls_server.port}"):
        with Client(target, root_certificates=pki.ca) as client:
            assert {m.name for m in client.list_models()} == {"tok", "agct"}
            table = client.score_variants(variant)
            assert table.status.tolist() == [0]
            assert table.diff.shape == (1, 4)
            streamed = list(client.iter_chunks(variant * 5, batch_size=2))
            assert sum(len(t) for t in streamed) == 5
            assert client.health() == "SERVING"


def test_plaintext_health_port_serves_health_only(tls_server: Any) -> None:
    """For probes that cannot speak TLS (Kubernetes'): health in plaintext, nothing else."""
    handle = tls_server.handle
    assert handle.health_port is not None
    target = f"127.0.0.1:{handle.health_port.port}"
    with Client(target) as client:
        assert client.health() == "SERVING"
        assert client.health("varfx.v1.VariantEffectService") == "SERVING"
        with pytest.raises(VarfxError) as info:
            client.list_models()
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
    tls_server.call(handle.set_serving(False))
    try:
        with Client(target) as client:
            assert client.health() == "NOT_SERVING"  # the same states as the TLS port
    finally:
        tls_server.call(handle.set_serving(True))


def test_plaintext_client_to_tls_server_fails_fast(tls_server: Any, variant: list[Any]) -> None:
    err = _fails_fast(lambda: Client(tls_server.target, retry=PATIENT), Client.list_models)
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "speaks TLS and this client plaintext" in str(err)
    err = _fails_fast(
        lambda: Client(tls_server.target, retry=PATIENT),
        lambda c: list(c.iter_chunks(variant, batch_size=1)),
    )
    assert "speaks TLS and this client plaintext" in str(err)


def test_tls_client_to_plaintext_server_fails_fast(
    server: Any, pki: PKI, variant: list[Any]
) -> None:
    err = _fails_fast(
        lambda: Client(server.target, root_certificates=pki.ca, retry=PATIENT),
        lambda c: c.score_variants(variant),
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "speaks plaintext (no TLS) and this client TLS" in str(err)


def test_varfx_score_tls_against_plaintext_fails_fast(
    server: Any, tmp_path: Path, variant: list[Any]
) -> None:
    """The CLI's ~minute of retries is for servers that are down, not for a wrong --tls."""
    chrom, pos, ref, alt = variant[0]
    vcf = tmp_path / "in.vcf"
    vcf.write_text(
        f"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n{chrom}\t{pos}\t.\t{ref}\t{alt}\n"
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "varfx", "score", str(vcf), "--server", server.target, "--tls",
         "-o", str(tmp_path / "out.tsv"), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert time.monotonic() - start < 30  # python start-up included; the call itself ~ms
    assert result.returncode == 1
    assert "speaks plaintext (no TLS) and this client TLS" in result.stderr
    assert "Traceback" not in result.stderr


def test_async_client_mismatch_fails_fast(tls_server: Any) -> None:
    async def run() -> VarfxError:
        async with AsyncClient(tls_server.target, retry=PATIENT) as client:
            with pytest.raises(VarfxError) as info:
                await client.list_models()
        return info.value

    start = time.monotonic()
    err = asyncio.run(run())
    assert time.monotonic() - start < FAST_ENOUGH_S
    assert "speaks TLS and this client plaintext" in str(err)


def test_async_client_streams_fail_fast_on_a_mismatch(
    tls_server: Any, server: Any, pki: PKI, variant: list[Any]
) -> None:
    """AsyncClient's streams (iter_chunks, score_variants) get the same TLS/plaintext check as
    its unary calls and as Client's streams, instead of resuming for about a minute."""

    async def stream(client: AsyncClient) -> VarfxError:
        async with client:
            with pytest.raises(VarfxError) as info:
                async for _ in client.iter_chunks(variant, batch_size=1):
                    pass
        return info.value

    cases = [
        (
            lambda: AsyncClient(tls_server.target, retry=PATIENT),
            "speaks TLS and this client plaintext",
        ),
        (
            lambda: AsyncClient(server.target, root_certificates=pki.ca, retry=PATIENT),
            "speaks plaintext (no TLS) and this client TLS",
        ),
    ]
    for make, message in cases:

        async def run() -> VarfxError:
            return await stream(make())  # noqa: B023 -- awaited within this iteration

        start = time.monotonic()
        err = asyncio.run(run())
        assert time.monotonic() - start < FAST_ENOUGH_S, str(err)
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert message in str(err)


def test_untrusted_server_certificate_fails_fast(tls_server: Any, pki: PKI) -> None:
    err = _fails_fast(
        lambda: Client(tls_server.target, root_certificates=pki.other_ca, retry=PATIENT),
        Client.list_models,
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "is not accepted by this client" in str(err)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err)


def test_mutual_tls(mtls_server: Any, pki: PKI, variant: list[Any], tmp_path: Path) -> None:
    with Client(
        mtls_server.target,
        root_certificates=pki.ca,
        client_certificate=pki.client_cert,
        client_key=pki.client_key,
    ) as client:
        assert client.score_variants(variant).status.tolist() == [0]
    err = _fails_fast(
        lambda: Client(mtls_server.target, root_certificates=pki.ca, retry=PATIENT),
        Client.list_models,
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "without a client certificate (mutual TLS)" in str(err)
    stranger = make_pki(tmp_path / "stranger")  # a client certificate from another CA
    err = _fails_fast(
        lambda: Client(
            mtls_server.target,
            root_certificates=pki.ca,
            client_certificate=stranger.client_cert,
            client_key=stranger.client_key,
            retry=PATIENT,
        ),
        Client.list_models,
    )
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "ended the TLS session with this client's" in str(err)
    # and a raw gRPC client without a certificate gets no answer either
    channel = grpc.secure_channel(
        mtls_server.target, grpc.ssl_channel_credentials(pki.ca.read_bytes())
    )
    with channel, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_rotated_certificate_is_used_for_new_connections(
    model_repo: Path, genome_fa: Path, tmp_path: Path, pki: PKI
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)

    def models(ca: Path) -> list[Any]:
        with Client(f"localhost:{running.port}", root_certificates=ca, retry=ONCE) as client:
            return client.list_models()

    with start_in_thread(_config(model_repo, genome_fa, tls_cert=cert, tls_key=key)) as running:
        assert models(pki.ca)
        new = make_pki(tmp_path / "new")
        shutil.copy(new.server_cert, cert)  # half a rotation: the key does not match yet
        time.sleep(1.2)
        assert models(pki.ca)  # refused, logged; the certificate in force stays
        shutil.copy(new.server_key, key)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert models(new.ca)
                break
            except VarfxError:
                assert time.monotonic() < deadline, "rotated certificate not picked up"
                time.sleep(0.3)
        with pytest.raises(VarfxError, match="is not accepted by this client"):
            models(pki.ca)


def test_tls_files_are_checked_with_their_names(tmp_path: Path, pki: PKI) -> None:
    def creds(**kwargs: Any) -> Any:
        return server_credentials(ServerConfig(**kwargs))

    assert creds() is None
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError, match=r"tls_cert '.*nope\.pem': cannot read"):
        creds(tls_cert=missing, tls_key=pki.server_key)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(TLSConfigError, match=r"tls_key '.*junk\.pem': not a PEM file"):
        creds(tls_cert=pki.server_cert, tls_key=junk)
    with pytest.raises(TLSConfigError, match=r"client\.key' is not the private key of"):
        creds(tls_cert=pki.server_cert, tls_key=pki.client_key)
    with pytest.raises(TLSConfigError, match=r"tls_client_ca '.*server\.key'"):
        creds(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.server_key)
    with pytest.raises(ConfigError, match=r"tls_cert=.*: tls_cert and tls_key must be given"):
        ServerConfig(tls_cert=pki.server_cert)
    with pytest.raises(ConfigError, match="tls_client_ca=.*needs server TLS"):
        ServerConfig(tls_client_ca=pki.ca)


def test_tls_and_auth_keys_from_env_and_toml(tmp_path: Path, pki: PKI) -> None:
    toml = tmp_path / "varfx.toml"
    toml.write_text(f'[server]\ntls_cert = "{pki.server_cert}"\ntls_key = "{pki.server_key}"\n')
    env = {"VARFX_TLS_CLIENT_CA": str(pki.ca), "VARFX_AUTH_TOKENS_FILE": "/run/tokens"}
    c = load_config(config_file=toml, environ=env)
    assert (c.tls_cert, c.tls_key, c.tls_client_ca) == (pki.server_cert, pki.server_key, pki.ca)
    assert c.auth_tokens_file == Path("/run/tokens")
    c = load_config({"auth_tokens_file": ""}, environ=env | {"VARFX_TLS_CLIENT_CA": ""})
    assert c.auth_tokens_file is None
    assert c.tls_client_ca is None


# -- tokens ----------------------------------------------------------------------------------


def test_tokens_accepted_refused_and_health_open(auth_server: Any, variant: list[Any]) -> None:
    with Client(auth_server.target, token="beta-token-2") as client:
        assert client.score_variants(variant).status.tolist() == [0]
        assert len(list(client.iter_chunks(variant * 3, batch_size=1))) == 3
    with Client(auth_server.target) as anonymous:
        assert anonymous.health() == "SERVING"  # probes need no token
        for call in (
            Client.list_models,
            lambda c: c.score_variants(variant),
            lambda c: list(c.iter_chunks(variant * 3, batch_size=1)),
        ):
            with pytest.raises(VarfxError) as info:
                call(anonymous)
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert "requires a bearer token" in str(info.value)
    with Client(auth_server.target, token="alpha-token-X") as wrong:
        with pytest.raises(VarfxError) as info:
            wrong.list_models()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "not accepted" in str(info.value)
    basic = Client(auth_server.target, metadata={"authorization": "Basic YWxhZGRpbg=="})
    with basic, pytest.raises(VarfxError, match="is not 'Bearer <token>'"):
        basic.list_models()


def test_reflection_needs_a_token(auth_server: Any) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(auth_server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(
            stub.ServerReflectionInfo(
                iter([request]), timeout=5, metadata=[("authorization", "Bearer alpha-token-1")]
            )
        )
    names = {s.name for s in answers[0].list_services_response.service}
    assert "varfx.v1.VariantEffectService" in names


def test_token_file_reload_on_change_and_on_reload_hook(
    model_repo: Path, genome_fa: Path, tmp_path: Path
) -> None:
    path = tmp_path / "tokens"
    path.write_text("old-token\n")
    with start_in_thread(_config(model_repo, genome_fa, auth_tokens_file=path)) as running:
        handle = running.handle
        assert handle is not None
        assert handle.tokens is not None

        def works(token: str) -> bool:
            with Client(running.target, token=token, retry=RetryPolicy(max_attempts=1)) as c:
                try:
                    c.list_models()
                except VarfxError as exc:
                    if exc.code != grpc.StatusCode.UNAUTHENTICATED:
                        raise
                    return False
                return True

        assert works("old-token")
        assert not works("new-token")
        path.write_text("new-token\n")
        deadline = time.monotonic() + 5
        while not works("new-token"):  # the mtime check runs at most once a second
            assert time.monotonic() < deadline, "token file change not picked up"
            time.sleep(0.2)
        assert not works("old-token")
        # the SIGHUP hook: re-read now, whatever the mtime
        reloads = handle.tokens.reloads
        path.write_text("third-token\n")
        os.utime(path, ns=(1, 1))
        handle.reload_tokens()
        assert handle.tokens.reloads == reloads + 1
        assert works("third-token")
        assert not works("new-token")
        # a broken file keeps the tokens in force
        path.write_text("good\nbad token with spaces\n")
        handle.reload_tokens()
        assert works("third-token")
        assert not works("good")


def test_token_store_reads_the_file_and_checks_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("# comment\n\na1\n  b2\t\n")
    assert read_tokens(path) == [b"a1", b"b2"]
    now = [0.0]
    store = TokenStore(path, check_interval_s=10.0, clock=lambda: now[0])
    assert len(store) == 2
    assert store.accepts(b"a1")
    assert not store.accepts(b"a")
    path.write_text("c3\n")
    now[0] = 5.0
    store.maybe_reload()
    assert store.accepts(b"a1")  # not looked at yet
    now[0] = 10.0
    store.maybe_reload()
    assert store.accepts(b"c3")
    assert not store.accepts(b"a1")
    path.write_text("# all revoked\n")
    assert store.reload()
    assert len(store) == 0
    assert not store.accepts(b"c3")
    path.unlink()
    assert not store.reload()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ok\nnot ok\n", r"t:2: a token is visible ASCII"),
        ("# only a comment\n\n", r"t: no tokens"),
        ("caf\u00e9\n", r"t:1: a token is visible ASCII"),
    ],
)
def test_bad_token_files_are_named(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "t"
    path.write_text(text)
    with pytest.raises(TokenFileError, match=match):
        TokenStore(path)
    with pytest.raises(TokenFileError, match="cannot read"):
        TokenStore(tmp_path / "absent")


# -- client-side rules -----------------------------------------------------------------------


def test_client_refuses_a_token_in_plaintext_to_another_host() -> None:
    for target in ("10.1.2.3:50051", "dns:///varfx.example.org:443", "ipv4:127.0.0.1:1,10.0.0.1:1"):
        with pytest.raises(InsecureTransportError, match="refusing to send a bearer token"):
            Client(target, token="t")
    # told so, or over TLS, or to this machine, or without a token: allowed
    for kwargs in ({"insecure": True}, {"tls": True}):
        Client("10.1.2.3:50051", token="t", **kwargs).close()
    for target in ("127.0.0.1:1", "localhost:1", "[::1]:1", "ipv4:127.0.0.1:1,127.0.0.2:1"):
        Client(target, token="t").close()
    Client("10.1.2.3:50051").close()


def test_target_parsing() -> None:
    assert target_addresses("h:1") == [("h", 1)]
    assert target_addresses("[::1]:7") == [("::1", 7)]
    assert target_addresses("dns:///a.b:9") == [("a.b", 9)]
    assert target_addresses("dns://8.8.8.8/a.b:9") == [("a.b", 9)]
    assert target_addresses("ipv4:1.2.3.4:5,6.7.8.9:10") == [("1.2.3.4", 5), ("6.7.8.9", 10)]
    assert target_addresses("example.org") == [("example.org", 443)]
    assert target_addresses("unix:/run/varfx.sock") is None
    assert is_loopback_target("unix:/run/varfx.sock")
    assert not is_loopback_target("localhost.evil.org:1")
    assert is_loopback_host("127.8.9.10")
    assert is_loopback_host("[::1]")
    assert is_loopback_host("LOCALHOST")
    assert not is_loopback_host("0.0.0.0")
    assert not is_loopback_host("::")
    assert not is_loopback_host("10.0.0.1")


def test_sighup_reloads_tokens_of_a_real_varfx_serve(
    model_repo: Path, tmp_path: Path, pki: PKI
) -> None:
    from tests.server.test_serve_cli import Proc

    path = tmp_path / "tokens"
    path.write_text("before\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARFX_")}
    env |= {"PYTHONUNBUFFERED": "1", "VARFX_AUTH_TOKENS_FILE": str(path)}
    args = ["serve", "--model-repo", str(model_repo), "--host", "127.0.0.1", "--port", "0"]
    args += ["--metrics-host", "127.0.0.1", "--metrics-port", "0", "--warmup-batch-sizes", "1"]
    args += ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    proc = Proc(args, env)
    try:
        port, _ = proc.wait_ready()
        target = f"localhost:{port}"
        with Client(target, root_certificates=pki.ca, token="before") as client:
            assert {m.name for m in client.list_models()} == {"tok", "agct"}
        path.write_text("after\n")
        os.utime(path, ns=(1, 1))  # an old mtime: SIGHUP re-reads whatever the mtime
        proc.popen.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "auth tokens reloaded" not in proc.log:
            assert time.monotonic() < deadline, proc.log
            time.sleep(0.05)
        with Client(target, root_certificates=pki.ca, token="after") as client:
            assert client.list_models()
        with Client(target, root_certificates=pki.ca, token="before") as client:
            with pytest.raises(VarfxError) as info:
                client.list_models()
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(30) == 0
    finally:
        proc.kill()
