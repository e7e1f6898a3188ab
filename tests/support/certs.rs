//! Certificates made at test time with `rcgen`: a CA, a server certificate it signs, a client
//! certificate it signs (mutual TLS), and a second, unrelated CA with a client certificate of
//! its own, to be refused. Written as PEM files, as an operator would hand them to the server.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The name the server certificate is issued for, besides `127.0.0.1`.
pub const SERVER_NAME: &str = "activations.test";

/// PEM files of a small test PKI, in a temporary directory removed on drop.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes the certificates: `ca.pem`; `server.pem`/`server.key` for [`SERVER_NAME`] and
    /// `127.0.0.1`; `client.pem`/`client.key` signed by the same CA; `other-ca.pem`, and
    /// `other-server.pem`/`other-server.key` (the same names) and
    /// `other-client.pem`/`other-client.key` signed by the other CA.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = certificate_authority("activations test CA");
        let other_ca = certificate_authority("some other CA");
        write(dir.path(), "ca.pem", &ca.pem());
        write(dir.path(), "other-ca.pem", &other_ca.pem());

        for (name, issuer) in [("server", &ca), ("other-server", &other_ca)] {
            let server = leaf(
                vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            let key = KeyPair::generate().expect("key");
            let cert = server.signed_by(&key, issuer).expect("sign");
            write(dir.path(), &format!("{name}.pem"), &cert.pem());
            write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
        }

        for (name, issuer) in [("client", &ca), ("other-client", &other_ca)] {
            let params = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, issuer).expect("sign");
            write(dir.path(), &format!("{name}.pem"), &cert.pem());
            write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
        }
        TestPki { dir }
    }

    /// The path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The contents of one of the files.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("reading a test certificate")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn leaf(names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::new(names).expect("params");
    params.extended_key_usages = vec![usage];
    params
}

fn write(dir: &Path, name: &str, pem: &str) {
    std::fs::write(dir.join(name), pem).expect("writing a test certificate");
}
