//! The cluster CA and node certificates.
//!
//! Nodes of a cluster prove who they are to each other with certificates signed by one
//! certificate authority per cluster, the [`ClusterCa`]. Each node holds a [`NodeCert`]: a
//! certificate naming the node, its private key, and the CA certificate it trusts. This is what
//! `ensemble cert init` (make the CA) and `ensemble cert issue <node>` (make a node's
//! certificate) produce.
//!
//! # Files
//!
//! A CA lives in a directory as `ca.pem` (certificate) and `ca.key` (private key, PKCS#8). A node
//! certificate lives in a directory as `<node>.pem`, `<node>.key` (PKCS#8) and `ca.pem`, so one
//! directory can hold the certificates of several nodes next to the CA certificate they share.
//! Private keys are written with mode `0600` on Unix. Saving overwrites existing files.
//!
//! # Identity
//!
//! A node certificate carries the node name twice: as its only DNS subject alternative name
//! (what peers read, see [`NodeCert::node`]) and as its common name (for people reading it with
//! `openssl x509`). It is valid for both TLS server and TLS client authentication, since every
//! node both dials and accepts. Node names follow the same rule as
//! [`NodeConfig`](crate::NodeConfig): one or more ASCII letters, digits, `-`, `_` or `.`.
//!
//! # Keys
//!
//! Keys are Ed25519: fast, small, and signing needs no random numbers, so a handshake's
//! signature never depends on a random source and always has the same length (an ECDSA
//! signature's DER length varies, which changes how QUIC packs a handshake into datagrams and
//! so the course of a deterministic simulation). A CA or certificate made with another key type
//! (ECDSA, by an earlier version) loads and works as before.
//!
//! # Invariants
//!
//! A [`ClusterCa`] or [`NodeCert`] value only exists with well-formed contents: generating,
//! issuing and loading all check that the PEM texts parse, that each key belongs to its
//! certificate, and (for a node) that the certificate names the node and verifies against the
//! CA certificate. The TLS configuration code relies on this to treat a parse failure as a bug.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// File name of the CA certificate, in both CA and node directories.
const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
const CA_KEY_FILE: &str = "ca.key";

/// How long a CA certificate is valid. Longer than a node certificate so that a node
/// certificate issued early in the CA's life does not outlive it.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);
/// How long a node certificate is valid. Clusters rotate certificates by re-issuing them;
/// a long validity keeps an unattended cluster from failing on a forgotten expiry date.
const NODE_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How far in the past validity starts, so that a node whose clock is slightly behind the
/// issuer's still accepts a certificate issued a moment ago.
const CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);

/// What to do when the CA is missing or damaged.
const CA_FIX: &str = "create one with `ensemble cert init`";

/// A cluster's certificate authority: the CA certificate every node trusts and the key that
/// signs node certificates.
///
/// Keep the CA key off the nodes where possible: nodes only need [`NodeCert`]s, which carry the
/// CA certificate but not its key.
#[derive(Clone)]
pub struct ClusterCa {
    /// The self-signed CA certificate, PEM; what nodes put in their root store.
    cert_pem: String,
    /// The CA private key, PKCS#8 PEM; needed only to issue node certificates.
    key_pem: String,
}

impl ClusterCa {
    /// Generates a new self-signed CA for the cluster named `cluster`, with the common name
    /// `Ensemble cluster CA <cluster>`.
    pub fn generate(cluster: &str) -> Result<ClusterCa, CertError> {
        Self::generate_with(cluster, &rcgen::PKCS_ED25519)
    }

    /// A CA with a key of algorithm `alg` (earlier versions made ECDSA P-256 keys).
    fn generate_with(
        cluster: &str,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Result<ClusterCa, CertError> {
        let what = || format!("CA for cluster {cluster:?}");
        let key = KeyPair::generate_for(alg).map_err(|source| CertError::Generate {
            what: what(),
            source,
        })?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(serial_number(&key));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Ensemble cluster CA {cluster}"));
        // Path length 0: the CA signs node certificates directly, never intermediate CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params
            .self_signed(&key)
            .map_err(|source| CertError::Generate {
                what: what(),
                source,
            })?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Reads a CA from `dir/ca.pem` and `dir/ca.key`, and checks that the certificate is a CA
    /// certificate and that the key belongs to it.
    pub fn load(dir: &Path) -> Result<ClusterCa, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read(&cert_path, "CA certificate", CA_FIX)?;
        let key_pem = read(&key_path, "CA key", CA_FIX)?;

        let invalid = |path: &Path, what: &str, problem: String| CertError::Invalid {
            what: what.to_owned(),
            path: path.to_owned(),
            problem,
            fix: CA_FIX.to_owned(),
        };
        let info = inspect_pem(&cert_pem).map_err(|p| invalid(&cert_path, "CA certificate", p))?;
        if !info.is_ca {
            return Err(invalid(
                &cert_path,
                "CA certificate",
                "it is not a CA certificate (is it a node certificate?)".to_owned(),
            ));
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            invalid(
                &key_path,
                "CA key",
                format!("not a PKCS#8 private key: {e}"),
            )
        })?;
        if key.public_key_raw() != info.public_key {
            return Err(CertError::KeyMismatch {
                key_path,
                cert_path,
                fix: CA_FIX.to_owned(),
            });
        }
        Ok(ClusterCa { cert_pem, key_pem })
    }

    /// Writes the CA to `dir/ca.pem` and `dir/ca.key`, creating `dir` if needed. The key file
    /// gets mode `0600` on Unix. Existing files are overwritten.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        write(&dir.join(CA_KEY_FILE), &self.key_pem, "CA key", true)?;
        write(
            &dir.join(CA_CERT_FILE),
            &self.cert_pem,
            "CA certificate",
            false,
        )
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for the node named `node`, signed by this CA: DNS subject
    /// alternative name and common name `node`, usable for TLS server and client
    /// authentication, valid for 10 years.
    pub fn issue(&self, node: &str) -> Result<NodeCert, CertError> {
        self.issue_with(node, &rcgen::PKCS_ED25519)
    }

    /// A node certificate with a key of algorithm `alg`.
    fn issue_with(
        &self,
        node: &str,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Result<NodeCert, CertError> {
        validate_node_name(node)?;
        let what = || format!("certificate for node {node}");
        let generate = |source| CertError::Generate {
            what: what(),
            source,
        };
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(generate)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(generate)?;

        let key = KeyPair::generate_for(alg).map_err(generate)?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(serial_number(&key));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node);
        let dns_name = node.try_into().map_err(generate)?;
        params.subject_alt_names = vec![SanType::DnsName(dns_name)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Both: every node accepts connections (server) and dials peers (client).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, NODE_VALIDITY);
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;

        Ok(NodeCert {
            node: node.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key: Debug output ends up in logs.
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A node's certificate, its private key, and the cluster CA certificate it trusts: all a node
/// needs to take part in mutual TLS with its peers.
#[derive(Clone)]
pub struct NodeCert {
    /// The node name the certificate was issued for; also the certificate's DNS name.
    node: String,
    /// The node certificate, PEM; presented to peers.
    cert_pem: String,
    /// The node's private key, PKCS#8 PEM; proves possession of the certificate.
    key_pem: String,
    /// The cluster CA certificate, PEM; the only root peers' certificates are checked against.
    ca_pem: String,
}

impl NodeCert {
    /// Reads the certificate of node `node` from `dir/<node>.pem`, `dir/<node>.key` and
    /// `dir/ca.pem`, and checks that the certificate names `node`, that the key belongs to
    /// it, and that it verifies against the CA certificate now.
    pub fn load(dir: &Path, node: &str) -> Result<NodeCert, CertError> {
        validate_node_name(node)?;
        let fix = format!("issue one with `ensemble cert issue {node}`");
        let (cert_path, key_path) = node_paths(dir, node);
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_pem = read(&cert_path, &format!("certificate of node {node}"), &fix)?;
        let key_pem = read(&key_path, &format!("key of node {node}"), &fix)?;
        let ca_pem = read(
            &ca_path,
            "CA certificate",
            &format!("copy the cluster's ca.pem there, or {fix}"),
        )?;

        let invalid = |path: &Path, what: &str, problem: String| CertError::Invalid {
            what: what.to_owned(),
            path: path.to_owned(),
            problem,
            fix: fix.clone(),
        };
        let info = inspect_pem(&cert_pem)
            .map_err(|p| invalid(&cert_path, &format!("certificate of node {node}"), p))?;
        match info.dns_names.as_slice() {
            [name] if name == node => {}
            names => {
                return Err(CertError::WrongNode {
                    path: cert_path,
                    expected: node.to_owned(),
                    found: names.join(", "),
                });
            }
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            invalid(
                &key_path,
                &format!("key of node {node}"),
                format!("not a PKCS#8 private key: {e}"),
            )
        })?;
        if key.public_key_raw() != info.public_key {
            return Err(CertError::KeyMismatch {
                key_path,
                cert_path,
                fix,
            });
        }
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| {
            invalid(
                &ca_path,
                "CA certificate",
                format!("no PEM certificate in it: {e}"),
            )
        })?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(&cert_path, "certificate", e.to_string()))?;
        super::tls::verify_chain(&ca_der, &cert_der).map_err(|reason| CertError::Untrusted {
            node: node.to_owned(),
            path: cert_path,
            ca_path,
            reason: Box::new(reason),
        })?;

        Ok(NodeCert {
            node: node.to_owned(),
            cert_pem,
            key_pem,
            ca_pem,
        })
    }

    /// Writes the certificate to `dir/<node>.pem`, `dir/<node>.key` and `dir/ca.pem`, creating
    /// `dir` if needed. The key file gets mode `0600` on Unix. Existing files are overwritten.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        let (cert_path, key_path) = node_paths(dir, &self.node);
        write(
            &key_path,
            &self.key_pem,
            &format!("key of node {}", self.node),
            true,
        )?;
        write(
            &cert_path,
            &self.cert_pem,
            &format!("certificate of node {}", self.node),
            false,
        )?;
        write(
            &dir.join(CA_CERT_FILE),
            &self.ca_pem,
            "CA certificate",
            false,
        )
    }

    /// The node name the certificate was issued for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The node's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key: Debug output ends up in logs.
        f.debug_struct("NodeCert")
            .field("node", &self.node)
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// Making, reading, writing or using a certificate failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A node name does not follow the node-name rule.
    #[error("{name:?} is not a node name: use 1 or more ASCII letters, digits, '-', '_' or '.'")]
    InvalidNodeName {
        /// The rejected name.
        name: String,
    },

    /// A node name that its certificate's files cannot carry.
    #[error(
        "{name:?} cannot be a node name: its certificate files would be the CA's ca.pem and ca.key; pick another name"
    )]
    ReservedNodeName {
        /// The rejected name.
        name: String,
    },

    /// A certificate or key file could not be read.
    #[error("cannot read {what} {}: {source} ({fix})", path.display())]
    Read {
        /// What the file should hold, e.g. "CA certificate".
        what: String,
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: io::Error,
        /// What to do about it.
        fix: String,
    },

    /// A certificate or key file, or its directory, could not be written.
    #[error(
        "cannot write {what} {}: {source} (check that the directory is writable and the disk not full)",
        path.display()
    )]
    Write {
        /// What the file holds, e.g. "CA key".
        what: String,
        /// The file or directory.
        path: PathBuf,
        /// Why writing failed.
        source: io::Error,
    },

    /// A file was read but does not hold what it should.
    #[error("{what} {} is invalid: {problem} ({fix})", path.display())]
    Invalid {
        /// What the file should hold.
        what: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What to do about it.
        fix: String,
    },

    /// A private key does not belong to the certificate next to it.
    #[error(
        "key {} does not belong to certificate {} ({fix})",
        key_path.display(),
        cert_path.display()
    )]
    KeyMismatch {
        /// The key file.
        key_path: PathBuf,
        /// The certificate file.
        cert_path: PathBuf,
        /// What to do about it.
        fix: String,
    },

    /// A node certificate file names another node than the one it was loaded for.
    #[error(
        "certificate {} was issued for node {found:?}, not {expected} (issue one with `ensemble cert issue {expected}`)",
        path.display()
    )]
    WrongNode {
        /// The certificate file.
        path: PathBuf,
        /// The node it was loaded for.
        expected: String,
        /// The DNS names it carries instead, comma-separated.
        found: String,
    },

    /// A node certificate does not verify against the CA certificate next to it: signed by
    /// another CA, expired, or not yet valid.
    #[error(
        "certificate {} of node {node} is not accepted by the cluster CA {}: {reason} (issue a new one with `ensemble cert issue {node}` from this cluster's CA)",
        path.display(),
        ca_path.display()
    )]
    Untrusted {
        /// The node.
        node: String,
        /// The certificate file.
        path: PathBuf,
        /// The CA certificate file.
        ca_path: PathBuf,
        /// Why verification failed (boxed: rustls errors are large and this one is rare).
        reason: Box<rustls::Error>,
    },

    /// Generating a key or signing a certificate failed.
    #[error("cannot generate {what}: {source} (retry; if it persists, report a bug)")]
    Generate {
        /// What was being generated, e.g. "certificate for node n1".
        what: String,
        /// The cause.
        source: rcgen::Error,
    },

    /// A TLS or QUIC configuration could not be built from a node certificate.
    #[error(
        "cannot set up TLS for node {node}: {source} (re-issue its certificate with `ensemble cert issue {node}`)"
    )]
    Tls {
        /// The node whose certificate was used.
        node: String,
        /// The cause, from rustls or quinn.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Checks a node name against the node-name rule (the same as `NodeConfig`'s), and that its
/// files (`<name>.pem`, `<name>.key`) are not the CA's.
pub(crate) fn validate_node_name(name: &str) -> Result<(), CertError> {
    if !is_node_name(name) {
        return Err(CertError::InvalidNodeName {
            name: name.to_owned(),
        });
    }
    if format!("{name}.pem") == CA_CERT_FILE {
        return Err(CertError::ReservedNodeName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether `name` is 1 or more ASCII letters, digits, `-`, `_` or `.`.
fn is_node_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The node name a DER certificate carries: its one DNS subject alternative name, if it is a
/// valid node name. `None` for anything else (no or several DNS names, unparsable
/// certificate), since such a certificate was not issued by [`ClusterCa::issue`].
pub(crate) fn node_name_in_der(der: &[u8]) -> Option<String> {
    let info = inspect_der(der).ok()?;
    match <[String; 1]>::try_from(info.dns_names) {
        Ok([name]) if is_node_name(&name) => Some(name),
        _ => None,
    }
}

/// What this module needs to know about a certificate.
struct CertInfo {
    /// The DNS subject alternative names.
    dns_names: Vec<String>,
    /// The raw subject public key, to compare with a key pair's.
    public_key: Vec<u8>,
    /// Whether basic constraints mark it as a CA.
    is_ca: bool,
}

/// Parses the first certificate of a PEM text; the error says what is wrong.
fn inspect_pem(pem: &str) -> Result<CertInfo, String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("no PEM certificate in it: {e}"))?;
    inspect_der(&der)
}

/// Parses a DER certificate; the error says what is wrong.
fn inspect_der(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("bad subject alternative names: {e}")),
    };
    Ok(CertInfo {
        dns_names,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        is_ca: cert.is_ca(),
    })
}

/// A certificate serial number unique to `key`: its public key's first 20 bytes, with the
/// top bits set to `01` so that the number is positive and always encodes in exactly 20 bytes
/// (a certificate's length never depends on its key).
fn serial_number(key: &KeyPair) -> rcgen::SerialNumber {
    let mut serial = [0u8; 20];
    let public = key.public_key_raw();
    let n = public.len().min(serial.len());
    serial[..n].copy_from_slice(&public[..n]);
    serial[0] = 0x40 | (serial[0] & 0x3f);
    rcgen::SerialNumber::from_slice(&serial)
}

/// Sets validity from a little before now (see [`CLOCK_SKEW`]) for `length`.
fn set_validity(params: &mut CertificateParams, length: Duration) {
    let start = SystemTime::now() - CLOCK_SKEW;
    params.not_before = start.into();
    params.not_after = (start + length).into();
}

/// The certificate and key paths of node `node` in `dir`.
fn node_paths(dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
    )
}

/// Reads a text file, naming it and what to do in the error.
fn read(path: &Path, what: &str, fix: &str) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Read {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
        fix: fix.to_owned(),
    })
}

/// Creates a directory and its parents.
fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        what: "certificate directory".to_owned(),
        path: dir.to_owned(),
        source,
    })
}

/// Writes a text file, replacing it; `private` files are readable by their owner only.
fn write(path: &Path, contents: &str, what: &str, private: bool) -> Result<(), CertError> {
    let write = || -> io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        // `mode` only applies to new files: an existing key file keeps its old mode unless it
        // is set again, and this happens before the new key is written into it.
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        #[cfg(not(unix))]
        let _ = private;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|source| CertError::Write {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// Certificates as earlier versions made them, with ECDSA P-256 keys: for tests that show
/// they still work.
#[cfg(test)]
pub(crate) mod ecdsa {
    use super::*;

    pub(crate) fn generate(cluster: &str) -> ClusterCa {
        ClusterCa::generate_with(cluster, &rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    pub(crate) fn issue(ca: &ClusterCa, node: &str) -> NodeCert {
        ca.issue_with(node, &rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature algorithm of a PEM certificate.
    fn signature_oid(pem: &str) -> String {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.signature_algorithm.algorithm.to_id_string()
    }

    /// Ed25519 (RFC 8410).
    const ED25519: &str = "1.3.101.112";
    /// ECDSA with SHA-256 (RFC 5758).
    const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";

    #[test]
    fn keys_are_ed25519_and_certificates_of_one_kind_have_one_length() {
        let ca = ClusterCa::generate("prod").unwrap();
        assert_eq!(signature_oid(ca.cert_pem()), ED25519);
        let lengths: std::collections::BTreeSet<usize> = (0..20)
            .map(|_| {
                let cert = ca.issue("n1").unwrap();
                assert_eq!(signature_oid(cert.cert_pem()), ED25519);
                CertificateDer::from_pem_slice(cert.cert_pem().as_bytes())
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(lengths.len(), 1, "certificate lengths {lengths:?}");
    }

    #[test]
    fn an_ecdsa_ca_of_an_earlier_version_loads_and_issues_ed25519_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let old = ecdsa::generate("prod");
        assert_eq!(signature_oid(old.cert_pem()), ECDSA_SHA256);
        old.save(dir.path()).unwrap();
        let loaded = ClusterCa::load(dir.path()).unwrap();
        let node = loaded.issue("n1").unwrap();
        // Signed by the CA's ECDSA key; the node's own key is Ed25519.
        assert_eq!(signature_oid(node.cert_pem()), ECDSA_SHA256);
        assert!(KeyPair::from_pem(node.key_pem()).unwrap().algorithm() == &rcgen::PKCS_ED25519);
        node.save(dir.path()).unwrap();
        NodeCert::load(dir.path(), "n1").unwrap();
    }

    #[test]
    fn ca_generate_save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("prod").unwrap();
        ca.save(dir.path()).unwrap();
        let loaded = ClusterCa::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        assert_eq!(loaded.key_pem, ca.key_pem);

        let der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "Ensemble cluster CA prod");
        assert!(cert.is_ca());

        // A loaded CA still issues certificates that verify against the original.
        let node = loaded.issue("n1").unwrap();
        assert_eq!(node.ca_pem(), ca.cert_pem());
    }

    #[test]
    fn node_cert_issue_save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("prod").unwrap();
        let cert = ca.issue("node-1.a_b").unwrap();
        assert_eq!(cert.node(), "node-1.a_b");
        cert.save(dir.path()).unwrap();
        for file in ["node-1.a_b.pem", "node-1.a_b.key", "ca.pem"] {
            assert!(dir.path().join(file).is_file(), "{file} missing");
        }

        let loaded = NodeCert::load(dir.path(), "node-1.a_b").unwrap();
        assert_eq!(loaded.node(), "node-1.a_b");
        assert_eq!(loaded.cert_pem(), cert.cert_pem());
        assert_eq!(loaded.key_pem(), cert.key_pem());
        assert_eq!(loaded.ca_pem(), ca.cert_pem());
        assert!(loaded.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));

        let der = CertificateDer::from_pem_slice(cert.cert_pem().as_bytes()).unwrap();
        assert_eq!(node_name_in_der(&der).as_deref(), Some("node-1.a_b"));
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = parsed.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "node-1.a_b");
        assert!(!parsed.is_ca());
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("prod").unwrap();
        // An existing, world-readable key file must not keep its mode when overwritten.
        fs::write(dir.path().join("ca.key"), "old").unwrap();
        fs::set_permissions(dir.path().join("ca.key"), fs::Permissions::from_mode(0o644)).unwrap();
        ca.save(dir.path()).unwrap();
        ca.issue("n1").unwrap().save(dir.path()).unwrap();
        for file in ["ca.key", "n1.key"] {
            let mode = fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[test]
    fn a_node_named_like_the_ca_is_refused_before_it_overwrites_the_ca() {
        let ca = ClusterCa::generate("prod").unwrap();
        let err = ca.issue("ca").unwrap_err();
        assert!(matches!(err, CertError::ReservedNodeName { .. }), "{err}");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn bad_node_names_are_refused_by_name() {
        let ca = ClusterCa::generate("prod").unwrap();
        for bad in ["", "node 1", "n/1", "nöde", "a:b"] {
            let err = ca.issue(bad).unwrap_err();
            assert!(matches!(err, CertError::InvalidNodeName { .. }), "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = NodeCert::load(dir.path(), "../etc/passwd").unwrap_err();
        assert!(
            err.to_string()
                .contains("\"../etc/passwd\" is not a node name")
        );
    }

    #[test]
    fn loading_from_a_missing_dir_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");

        let err = ClusterCa::load(&missing).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CertError::Read { .. }));
        assert!(
            msg.starts_with(&format!(
                "cannot read CA certificate {}",
                missing.join("ca.pem").display()
            )),
            "{msg}"
        );
        assert!(msg.contains("ensemble cert init"), "{msg}");

        let err = NodeCert::load(&missing, "n1").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&missing.join("n1.pem").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("ensemble cert issue n1"), "{msg}");
    }

    #[test]
    fn node_cert_from_another_ca_is_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let ours = ClusterCa::generate("ours").unwrap();
        let theirs = ClusterCa::generate("theirs").unwrap();
        theirs.issue("n1").unwrap().save(dir.path()).unwrap();
        fs::write(dir.path().join("ca.pem"), ours.cert_pem()).unwrap();

        let err = NodeCert::load(dir.path(), "n1").unwrap_err();
        assert!(matches!(err, CertError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("n1.pem"), "{err}");
    }

    #[test]
    fn renamed_or_mismatched_files_are_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("prod").unwrap();
        let n1 = ca.issue("n1").unwrap();
        let n2 = ca.issue("n2").unwrap();
        n1.save(dir.path()).unwrap();

        // n1's certificate saved under n2's name.
        fs::copy(dir.path().join("n1.pem"), dir.path().join("n2.pem")).unwrap();
        fs::copy(dir.path().join("n1.key"), dir.path().join("n2.key")).unwrap();
        let err = NodeCert::load(dir.path(), "n2").unwrap_err();
        assert!(matches!(err, CertError::WrongNode { .. }), "{err}");

        // n1's certificate with n2's key.
        fs::write(dir.path().join("n1.key"), n2.key_pem()).unwrap();
        let err = NodeCert::load(dir.path(), "n1").unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");

        // A node certificate where the CA should be.
        fs::write(dir.path().join("ca.pem"), n1.cert_pem()).unwrap();
        fs::write(dir.path().join("ca.key"), n1.key_pem()).unwrap();
        let err = ClusterCa::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a CA certificate"), "{err}");

        // Garbage.
        fs::write(dir.path().join("ca.pem"), "hello").unwrap();
        let err = ClusterCa::load(dir.path()).unwrap_err();
        assert!(matches!(err, CertError::Invalid { .. }), "{err}");
    }
}
