"""The team server's certificates: a CA of its own, in its folder, and the server certificate it signs.

Off loopback the team server speaks TLS only (mnistcnn/team/tracking_server.py): MLflow over
HTTPS, PostgreSQL's TCP connections through `hostssl`. Both present one certificate, signed by a
CA that the server makes on its first start, in `<folder>/tls/`:

    ca.crt       the CA's certificate: public, copied once to every teammate, who trusts it with
                 MLFLOW_TRACKING_SERVER_CERT_PATH (MLflow's client) and PGSSLROOTCERT (libpq: the
                 study storage's URL asks for sslmode=verify-full)
    ca.key       the CA's key (mode 0600): it never leaves the folder
    server.crt   the server's certificate, for the addresses and host names clients use
    server.key   its key (mode 0600)

The CA is kept across starts, so teammates copy it once; the server certificate is made again
when the names it must carry change. Keys are ECDSA P-256, which every client here speaks.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS = 10
SERVER_DAYS = 397  # what browsers accept for a server certificate


@dataclass(frozen=True)
class Certificates:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def certificate(self) -> Path:
        return self.folder / "server.crt"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"


def _write(path: Path, data: bytes, private: bool) -> None:
    """`data` into `path` whole or not at all (through a file beside it, renamed), keys readable by their owner only."""
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(part, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mnistcnn team server"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _signed(builder: x509.CertificateBuilder, subject_key, issuer_key, days: int) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (builder.public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .sign(issuer_key, hashes.SHA256()))


def _make_ca(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("mnistcnn team server CA")
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    _write(folder / "ca.key", _key_pem(key), private=True)
    _write(folder / "ca.crt", _signed(builder, key, key, 365 * CA_YEARS).public_bytes(serialization.Encoding.PEM),
           private=False)


def _alternative_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def names_of(certificate: Path) -> set[str]:
    """The addresses and host names a certificate is valid for."""
    loaded = x509.load_pem_x509_certificate(certificate.read_bytes())
    alternatives = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in alternatives}


def _make_server(folder: Path, names: list[str]) -> None:
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca.subject)
               .add_extension(x509.SubjectAlternativeName([_alternative_name(n) for n in names]), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    _write(folder / "server.key", _key_pem(key), private=True)
    _write(folder / "server.crt", _signed(builder, key, ca_key, SERVER_DAYS).public_bytes(serialization.Encoding.PEM),
           private=False)


def names_for(address: str, allowed_hosts: str) -> list[str]:
    """What a server certificate must name: the server's address, the host names clients use
    (`--allowed-hosts`, without their ports) and loopback, which the server's own requests use."""
    names = [address]
    for entry in filter(None, (part.strip() for part in allowed_hosts.split(","))):
        if entry.startswith("["):  # [IPv6]:port
            names.append(entry[1:].split("]")[0])
        else:
            names.append(entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry)
    return [*names, "localhost", "127.0.0.1"]


def ensure(server_folder: Path, names: list[str]) -> Certificates:
    """The CA (made on first use) and a server certificate for `names` (addresses or host names,
    the first its common name), made again when it lacks one of them or expires within a month."""
    certificates = Certificates(server_folder / "tls")
    certificates.folder.mkdir(mode=0o755, exist_ok=True)
    if not (certificates.folder / "ca.key").exists() or not certificates.ca.exists():
        _make_ca(certificates.folder)
        certificates.certificate.unlink(missing_ok=True)  # signed by a CA that is gone
    wanted = list(dict.fromkeys(names))
    if not certificates.certificate.exists() or not certificates.key.exists() \
            or not set(wanted) <= names_of(certificates.certificate) or _expiring(certificates.certificate):
        _make_server(certificates.folder, wanted)
    return certificates


def _expiring(certificate: Path) -> bool:
    loaded = x509.load_pem_x509_certificate(certificate.read_bytes())
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    return loaded.not_valid_after_utc < soon
