//! TLS for vault's own connection (the snapshot session), with libpq's `sslmode` meanings so
//! that one URL behaves the same for vault and for pg_dump:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default, as libpq) | if the server offers TLS | no |
//! | `require` | yes | no (libpq's meaning: only encryption) |
//! | `verify-ca` | yes | yes, against `sslrootcert` or the system roots (the host name is not checked) |
//! | `verify-full` | yes | yes, and the host name must match it |
//!
//! tokio-postgres itself knows only disable/prefer/require; the certificate policy lives in
//! the rustls configuration built here. A client certificate (`sslcert` + `sslkey`, else
//! `PGSSLCERT` / `PGSSLKEY`, else `~/.postgresql/postgresql.crt` / `.key`) is presented in
//! every mode that encrypts; a key file others can read is refused, as libpq refuses it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`: PEM file of trusted roots for verify-ca / verify-full.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` + `sslkey`: a client certificate to authenticate with.
    pub client_cert: Option<ClientCert>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsSettings {
    /// From the URL's `sslmode` / `sslrootcert`, else `PGSSLMODE` / `PGSSLROOTCERT`.
    pub fn from_params(sslmode: Option<&str>, sslrootcert: Option<&str>) -> Result<TlsSettings> {
        let env_mode = std::env::var("PGSSLMODE").ok();
        let mode = match sslmode.or(env_mode.as_deref()).unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            // libpq's `allow` tries plaintext first; vault tries TLS first, which is stricter.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "sslmode `{other}` in source.url is not one of disable, allow, prefer, \
                     require, verify-ca, verify-full"
                )));
            }
        };
        let root_cert = sslrootcert
            .map(str::to_string)
            .or_else(|| std::env::var("PGSSLROOTCERT").ok())
            .map(PathBuf::from);
        Ok(TlsSettings {
            mode,
            root_cert,
            client_cert: None,
        })
    }

    /// Adds the client certificate of the URL's `sslcert` / `sslkey`, else `PGSSLCERT` /
    /// `PGSSLKEY`, else libpq's default files `~/.postgresql/postgresql.crt` / `.key` when
    /// the certificate exists. A certificate without its key is an error.
    pub fn with_client_cert(
        mut self,
        sslcert: Option<&str>,
        sslkey: Option<&str>,
    ) -> Result<TlsSettings> {
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql"));
        let pick = |param: Option<&str>, env: &str, default: &str| {
            param
                .map(PathBuf::from)
                .or_else(|| std::env::var_os(env).map(PathBuf::from))
                .or_else(|| {
                    home.as_ref()
                        .map(|h| h.join(default))
                        .filter(|p| p.exists())
                })
        };
        let cert = pick(sslcert, "PGSSLCERT", "postgresql.crt");
        let key = pick(sslkey, "PGSSLKEY", "postgresql.key");
        self.client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            (None, None) | (None, Some(_)) => None,
            (Some(cert), None) => {
                return Err(Error::Config(format!(
                    "the client certificate `{}` has no private key: add sslkey=FILE to source.url (or set PGSSLKEY)",
                    cert.display()
                )));
            }
        };
        Ok(self)
    }

    /// The mode to hand tokio-postgres.
    pub fn negotiation(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The TLS connector for this policy.
    pub fn connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS setup failed: {e}")))?;
        let wants_client_cert = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(WithoutHostName {
                    provider,
                    roots: None,
                })),
            SslMode::VerifyCa => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(WithoutHostName {
                    provider,
                    roots: Some(self.roots()?),
                })),
            SslMode::VerifyFull => builder.with_root_certificates(self.roots()?),
        };
        let config = match &self.client_cert {
            None => wants_client_cert.with_no_client_auth(),
            Some(client) => {
                let (certs, key) = client.load()?;
                wants_client_cert
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| {
                        Error::Config(format!(
                            "the client certificate `{}` and key `{}` do not go together: {e}",
                            client.cert.display(),
                            client.key.display()
                        ))
                    })?
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        let default_file = std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
            .filter(|p| p.exists());
        match self.root_cert.clone().or(default_file) {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(&path).map_err(|e| {
                    Error::Config(format!("cannot read sslrootcert `{}`: {e}", path.display()))
                })?;
                for cert in certs {
                    let cert = cert.map_err(|e| {
                        Error::Config(format!("sslrootcert `{}`: {e}", path.display()))
                    })?;
                    roots.add(cert).map_err(|e| {
                        Error::Config(format!("sslrootcert `{}`: {e}", path.display()))
                    })?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        if roots.is_empty() {
            return Err(Error::Config(
                "sslmode verify-ca/verify-full needs trusted roots: set sslrootcert=FILE in \
                 source.url (or PGSSLROOTCERT), or install the system CA certificates"
                    .into(),
            ));
        }
        Ok(roots)
    }
}

impl ClientCert {
    /// Reads the certificate chain and the key, refusing a key file others may read (libpq's
    /// rule: 0600 or stricter when owned by the user, 0640 or stricter when owned by root).
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        check_key_permissions(&self.key)?;
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::Config(format!(
                    "cannot read sslcert `{}`: {e}",
                    self.cert.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "sslcert `{}` holds no PEM certificate",
                self.cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            Error::Key(format!(
                "cannot read the private key sslkey `{}`: {e}",
                self.key.display()
            ))
        })?;
        Ok((certs, key))
    }
}

fn check_key_permissions(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Key(format!("cannot read sslkey `{}`: {e}", path.display())))?;
    let mode = meta.mode() & 0o777;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let too_open =
        (meta.uid() == me && mode & 0o077 != 0) || (meta.uid() == 0 && mode & 0o037 != 0);
    if too_open {
        return Err(Error::Key(format!(
            "sslkey `{}` is accessible by group or others (mode {mode:03o}); fix it with \
             `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// libpq's `require` (no `roots`: any server certificate) and `verify-ca` (`roots`: the
/// chain must lead to one of them, whatever host name the certificate names). Handshake
/// signatures are verified either way, so the session key really belongs to the presented
/// certificate.
#[derive(Debug)]
struct WithoutHostName {
    provider: Arc<CryptoProvider>,
    roots: Option<rustls::RootCertStore>,
}

impl ServerCertVerifier for WithoutHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_follows_libpq_names() {
        let s = TlsSettings::from_params(Some("verify-full"), Some("/etc/ca.pem")).unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(s.negotiation(), tokio_postgres::config::SslMode::Require);
        let s = TlsSettings::from_params(Some("disable"), None).unwrap();
        assert_eq!(s.negotiation(), tokio_postgres::config::SslMode::Disable);
        let err = TlsSettings::from_params(Some("sometimes"), None).unwrap_err();
        assert!(err.to_string().contains("sslmode `sometimes`"), "{err}");
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_a_private_key_file() {
        let s = TlsSettings::from_params(Some("require"), None)
            .unwrap()
            .with_client_cert(Some("/etc/c.crt"), Some("/etc/c.key"))
            .unwrap();
        assert_eq!(
            s.client_cert,
            Some(ClientCert {
                cert: "/etc/c.crt".into(),
                key: "/etc/c.key".into()
            })
        );
        let err = TlsSettings::from_params(Some("require"), None)
            .unwrap()
            .with_client_cert(Some("/etc/c.crt"), None);
        // PGSSLKEY or ~/.postgresql/postgresql.key could supply it; neither is set in tests.
        if std::env::var_os("PGSSLKEY").is_none() {
            let err = err.unwrap_err();
            assert!(err.to_string().contains("has no private key"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, "not a key").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let err = check_key_permissions(&key).unwrap_err();
        assert!(matches!(err, Error::Key(_)), "{err:?}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        check_key_permissions(&key).unwrap();
    }
}
