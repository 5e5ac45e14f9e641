//! Signing keys and SSH signatures. A signing key is an OpenSSH Ed25519 private key (the
//! file `ssh-keygen -t ed25519` writes, unencrypted), kept apart from age identities: a DB
//! host's key signs what it writes and opens nothing. Signatures are SSH signatures
//! (`ssh-keygen -Y sign`: the armored SSHSIG format) under the namespace [`NAMESPACE`], so
//! anyone can check one with the stock `ssh-keygen -Y verify` and an `allowed_signers` line.

use std::path::Path;

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::error::{Error, Result};
use crate::keys::secret_file;

/// The SSH signature namespace of everything vault signs (`ssh-keygen -Y verify -n`).
pub const NAMESPACE: &str = "vault-repository";

/// A host's signing key.
pub struct SigningKey {
    private: PrivateKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().describe())
    }
}

impl SigningKey {
    /// A new random key (`comment` names the host in the public key line).
    pub fn generate(comment: &str) -> SigningKey {
        let seed: [u8; 32] = rand::random();
        let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
        let mut private = PrivateKey::from(pair);
        private.set_comment(comment);
        SigningKey { private }
    }

    /// Reads the key at `path`; refuses a file group or others can read, and any key that is
    /// not an unencrypted Ed25519 key.
    pub fn load(path: &Path) -> Result<SigningKey> {
        let text = secret_file::read_private(
            path,
            "signing key",
            "set [signing] key_file or VAULT_SIGNING_KEY_FILE to the file `vault keygen \
             --signing` wrote",
        )?;
        let private = PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
            Error::Key(format!(
                "signing key `{}` is not an OpenSSH private key ({e}); create one with `vault \
                 keygen --signing`",
                path.display()
            ))
        })?;
        if private.is_encrypted() || private.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(Error::Key(format!(
                "signing key `{}` must be an unencrypted Ed25519 key (it is {}{}); create one \
                 with `vault keygen --signing`",
                path.display(),
                private.algorithm(),
                if private.is_encrypted() {
                    ", encrypted"
                } else {
                    ""
                }
            )));
        }
        Ok(SigningKey { private })
    }

    /// Writes this key to `path` (mode 0600, never overwriting).
    pub fn write_new(&self, path: &Path) -> Result<()> {
        let text = self
            .private
            .to_openssh(LineEnding::LF)
            .map_err(|e| Error::Internal(format!("encoding a signing key failed: {e}")))?;
        secret_file::write_new_private(path, text.as_bytes())
    }

    pub fn public(&self) -> PublicSigner {
        PublicSigner(self.private.public_key().clone())
    }

    /// The armored SSH signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String> {
        let signature = self
            .private
            .sign(NAMESPACE, HashAlg::Sha512, message)
            .map_err(|e| Error::Internal(format!("signing failed: {e}")))?;
        signature
            .to_pem(LineEnding::LF)
            .map_err(|e| Error::Internal(format!("encoding a signature failed: {e}")))
    }
}

/// A public signing key, as its OpenSSH line (`ssh-ed25519 AAAA… comment`).
#[derive(Debug, Clone)]
pub struct PublicSigner(PublicKey);

impl PublicSigner {
    /// Parses an OpenSSH public key line.
    pub fn parse(line: &str) -> std::result::Result<PublicSigner, String> {
        let key = PublicKey::from_openssh(line.trim()).map_err(|e| {
            format!(
                "`{}` is not an OpenSSH public key line ({e}); use the last line `vault keygen \
                 --signing` printed",
                line.trim()
            )
        })?;
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(format!(
                "`{}` is a {} key; vault signs with Ed25519 keys only",
                line.trim(),
                key.algorithm()
            ));
        }
        Ok(PublicSigner(key))
    }

    /// The OpenSSH line (what `[trust] signers` holds).
    pub fn to_line(&self) -> String {
        self.0
            .to_openssh()
            .expect("an Ed25519 public key always encodes")
    }

    /// `comment (SHA256:…)`, or the fingerprint alone.
    pub fn describe(&self) -> String {
        let fingerprint = self.0.fingerprint(HashAlg::Sha256);
        match self.0.comment() {
            "" => fingerprint.to_string(),
            comment => format!("{comment} ({fingerprint})"),
        }
    }

    /// The same key, whatever the comments say.
    pub fn same_key(&self, other: &PublicSigner) -> bool {
        self.0.key_data() == other.0.key_data()
    }
}

/// Checks the armored SSH signature `armored` of `message`; returns the key that made it
/// (which the caller must still look up in its trust list).
pub fn verify(message: &[u8], armored: &str) -> std::result::Result<PublicSigner, String> {
    let signature = SshSig::from_pem(armored.as_bytes())
        .map_err(|e| format!("its signature is not an SSH signature ({e})"))?;
    let key = PublicKey::from(signature.public_key().clone());
    if key.algorithm() != ssh_key::Algorithm::Ed25519 {
        return Err(format!(
            "its signature is made with a {} key; vault accepts Ed25519 only",
            key.algorithm()
        ));
    }
    key.verify(NAMESPACE, message, &signature).map_err(|_| {
        "its signature does not match what it signs: the signed statement was altered".to_string()
    })?;
    Ok(PublicSigner(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_message_and_names_its_key() {
        let key = SigningKey::generate("db1");
        let signature = key.sign(b"statement").unwrap();
        let signer = verify(b"statement", &signature).unwrap();
        assert!(signer.same_key(&key.public()));
        assert!(
            signer.describe().starts_with("SHA256:"),
            "comments are not signed"
        );
        assert!(key.public().describe().starts_with("db1 (SHA256:"));
        assert!(verify(b"statemenT", &signature).is_err());
        assert!(verify(b"statement", "garbage").is_err());
        let other = SigningKey::generate("db2");
        assert!(!other.public().same_key(&key.public()));
    }

    #[test]
    fn a_key_file_round_trips_and_loose_permissions_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let key = SigningKey::generate("host");
        key.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = SigningKey::load(&path).unwrap();
        assert!(loaded.public().same_key(&key.public()));
        let again = key.write_new(&path).unwrap_err().to_string();
        assert!(again.contains("never overwrites"), "{again}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let loose = SigningKey::load(&path).unwrap_err().to_string();
        assert!(loose.contains("chmod 600"), "{loose}");
        let parsed = PublicSigner::parse(&key.public().to_line()).unwrap();
        assert!(parsed.same_key(&key.public()));
        assert!(PublicSigner::parse("age1qqq").is_err());
    }
}
