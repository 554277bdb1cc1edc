//! A private CA made by rcgen and a certificate it signed for `localhost`, for
//! TLS origins and the TLS proxy listener.

use rustls_pki_types::CertificateDer;

/// A private CA and a certificate it signed for `localhost`.
pub struct Pki {
    pub ca_pem: String,
    pub leaf: CertificateDer<'static>,
    /// The leaf's key, PKCS#8 DER.
    pub leaf_key: Vec<u8>,
    pub leaf_pem: String,
    pub leaf_key_pem: String,
}

pub fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "herdguard test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        leaf_key: leaf_key.serialize_der(),
        leaf_pem: leaf.pem(),
        leaf_key_pem: leaf_key.serialize_pem(),
    }
}
