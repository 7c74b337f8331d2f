"""Make a local certificate authority and the certificates the services and workers present.

For trying TLS, for tests and for a small deployment without a PKI of its own:

    python -m scripts.certs certs --server job-service --name job-service --name localhost --ip 127.0.0.1
    python -m scripts.certs certs --server auth-service --name auth-service --name localhost --ip 127.0.0.1
    python -m scripts.certs certs --client worker

The first run creates ``certs/ca.pem`` and ``certs/ca.key`` (the authority); every later run
into the same folder signs with that same authority, so one ``ca.pem`` verifies them all.
``--server STEM`` writes ``STEM.pem`` and ``STEM.key``, a server certificate for every
``--name`` (DNS) and ``--ip`` given; ``--client NAME`` writes ``NAME.pem`` and ``NAME.key``, a
client certificate (mutual TLS) whose common name is NAME. Existing files are never
overwritten: delete one to issue it again. Keys are P-256 ECDSA, written readable by their
owner only (a container running as another user needs them made readable to it).

``ca.key`` can sign a certificate for any name that every holder of ``ca.pem`` then trusts:
keep it off the machines that run the services. docs/security.md ("TLS set-up") says what
each service reads.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How long a certificate this tool issues is valid (the authority: ten times as long).
VALID_DAYS = 397
#: A certificate is valid from this long before it was made, for hosts whose clocks lag a little.
BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``STEM.pem`` and ``STEM.key`` (owner-only) into ``directory``; returns their paths."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        for path in (cert_path, key_path):
            if path.exists():
                raise FileExistsError(f"{path} exists; delete it to issue it again")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.key)
        cert_path.write_bytes(self.cert)
        return cert_path, key_path


@dataclass(frozen=True)
class Authority:
    """A certificate authority: the certificate every party trusts and the key that signs the others."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "Job Queue local CA") -> Authority:
        """A new self-signed authority."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=10 * VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        """The authority kept in ``directory`` (``ca.pem``, ``ca.key``)."""
        certificate = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / 'ca.key'} is not an ECDSA key")
        return cls(certificate, key)

    @classmethod
    def in_directory(cls, directory: Path) -> Authority:
        """The authority of ``directory``, created there first if it has none."""
        if not (directory / "ca.pem").exists():
            authority = cls.create()
            Issued(authority.pem, _key_pem(authority.private_key)).write(directory, "ca")
        return cls.load(directory)

    @property
    def pem(self) -> bytes:
        """The authority's certificate, PEM: what a party that verifies the others is given."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def server(self, names: Iterable[str] = (), ips: Iterable[str] = ()) -> Issued:
        """A server certificate valid for every DNS name in ``names`` and address in ``ips``."""
        dns = list(names)
        addresses = [ipaddress.ip_address(ip) for ip in ips]
        if not dns and not addresses:
            raise ValueError("a server certificate needs at least one --name or --ip")
        alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        alternatives += [x509.IPAddress(address) for address in addresses]
        return self._issue(dns[0] if dns else str(addresses[0]), alternatives, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, name: str) -> Issued:
        """A client certificate (mutual TLS) whose common name is ``name``."""
        return self._issue(name, [x509.DNSName(name)], ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(self, common_name: str, alternatives: list[x509.GeneralName], purpose: x509.ObjectIdentifier) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()), critical=False
            )
            .sign(self.private_key, hashes.SHA256())
        )
        return Issued(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.certs",
        description="Create a local CA in OUT_DIR (once) and issue server and client certificates signed by it.",
    )
    parser.add_argument("out_dir", type=Path, help="folder of ca.pem, ca.key and the certificates (created)")
    parser.add_argument("--server", metavar="STEM", help="write STEM.pem and STEM.key, a server certificate")
    parser.add_argument("--name", action="append", default=[], help="a DNS name of the server certificate")
    parser.add_argument("--ip", action="append", default=[], help="an IP address of the server certificate")
    parser.add_argument(
        "--client", metavar="NAME", action="append", default=[], help="write NAME.pem and NAME.key, a client cert"
    )
    args = parser.parse_args(argv)
    if (args.name or args.ip) and not args.server:
        parser.error("--name and --ip belong to a --server certificate")
    if args.server and not (args.name or args.ip):
        parser.error("--server needs at least one --name or --ip")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        authority = Authority.in_directory(args.out_dir)
        written = [args.out_dir / "ca.pem"]
        if args.server:
            written += authority.server(args.name, args.ip).write(args.out_dir, args.server)
        for name in args.client:
            written += authority.client(name).write(args.out_dir, name)
    except (OSError, ValueError) as error:
        print(f"certs: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
