//! age keys: parsing recipients (public, all the DB host needs), loading identities (secret,
//! only for reading backups) with a permission check, and generating new identities.

pub mod header;
pub mod secret_file;

use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use crate::config::EncryptionConfig;
use crate::error::{Error, Result};

/// The recipients a backup is encrypted to, with their canonical `age1...` text kept for
/// the manifest (so a reader can be told which keys would open a backup).
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
}

/// A configured recipient with the label the operator gave it (for the runbook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub key: String,
    pub label: Option<String>,
    /// Where it is configured (`encryption.recipients`, `file:line`).
    pub origin: String,
}

/// Every configured recipient as written, with labels: `"age1… # ops key"` in
/// `encryption.recipients`; in `recipients_file` a `# comment` after the key, or the comment
/// line right above it.
pub fn configured(config: &EncryptionConfig) -> Result<Vec<Labelled>> {
    let split = |text: &str| -> (String, Option<String>) {
        match text.split_once('#') {
            Some((key, label)) => (
                key.trim().to_string(),
                Some(label.trim().to_string()).filter(|l| !l.is_empty()),
            ),
            None => (text.trim().to_string(), None),
        }
    };
    let mut found: Vec<Labelled> = config
        .recipients
        .iter()
        .map(|r| {
            let (key, label) = split(r);
            Labelled {
                key,
                label,
                origin: "encryption.recipients".into(),
            }
        })
        .collect();
    if let Some(path) = &config.recipients_file {
        let content = std::fs::read_to_string(path).map_err(|e| {
            Error::Key(format!(
                "cannot read encryption.recipients_file `{}`: {e}",
                path.display()
            ))
        })?;
        let mut comment_above: Option<String> = None;
        for (n, line) in content.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                comment_above = None;
            } else if let Some(comment) = line.strip_prefix('#') {
                comment_above = Some(comment.trim().to_string()).filter(|c| !c.is_empty());
            } else {
                let (key, label) = split(line);
                found.push(Labelled {
                    key,
                    label: label.or(comment_above.take()),
                    origin: format!("{}:{}", path.display(), n + 1),
                });
            }
        }
    }
    Ok(found)
}

impl Recipients {
    /// Parses every configured recipient; any bad one is an error naming it.
    pub fn from_config(config: &EncryptionConfig) -> Result<Recipients> {
        let texts = configured(config)?;
        if texts.is_empty() {
            return Err(Error::Key(
                "no age recipients configured: add `recipients = [\"age1...\"]` or \
                 `recipients_file` under [encryption] (create a key with `vault keygen`)"
                    .into(),
            ));
        }
        let keys = texts
            .iter()
            .map(|r| parse_recipient(&r.key, &r.origin))
            .collect::<Result<Vec<_>>>()?;
        Ok(Recipients { keys })
    }

    /// Parses recipients already known to be vault's (a manifest's list); `origin` names
    /// where they come from in errors.
    pub fn parse(texts: &[String], origin: &str) -> Result<Recipients> {
        if texts.is_empty() {
            return Err(Error::Key(format!("{origin} lists no age recipients")));
        }
        let keys = texts
            .iter()
            .map(|text| parse_recipient(text, origin))
            .collect::<Result<Vec<_>>>()?;
        Ok(Recipients { keys })
    }

    /// The canonical `age1...` strings, in configuration order.
    pub fn public_keys(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.to_string()).collect()
    }

    /// A short name of this set of recipients, whatever their order: the first 16 hex
    /// digits of the sha256 of their sorted keys.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut keys = self.public_keys();
        keys.sort();
        let digest = sha2::Sha256::digest(keys.join("\n").as_bytes());
        hex::encode(&digest[..8])
    }

    /// An encryptor to every recipient, and the commitment to the file key it chose (what a
    /// signed statement binds the object by: `header::commitment`).
    pub fn encryptor(&self) -> (age::Encryptor, [u8; 32]) {
        self.encryptor_with(Vec::new())
    }

    /// [`encryptor`](Self::encryptor), its header carrying `extra` stanzas too.
    pub fn encryptor_with(
        &self,
        extra: Vec<age_core::format::Stanza>,
    ) -> (age::Encryptor, [u8; 32]) {
        let witness = header::CommitmentWitness::with(extra);
        let encryptor = age::Encryptor::with_recipients(
            self.keys
                .iter()
                .map(|k| k as &dyn age::Recipient)
                .chain(std::iter::once(&witness as &dyn age::Recipient)),
        )
        .expect("the recipient list is non-empty and holds only X25519 recipients");
        (encryptor, witness.commitment())
    }
}

fn parse_recipient(text: &str, origin: &str) -> Result<age::x25519::Recipient> {
    age::x25519::Recipient::from_str(text).map_err(|e| {
        Error::Key(format!(
            "invalid age recipient `{text}` in {origin}: {e}; a recipient is the `age1...` \
             public key printed by `vault keygen` or `age-keygen -y`"
        ))
    })
}

/// Identities able to decrypt backups, loaded from an identity file.
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
}

impl Identities {
    /// Reads an identity file written by `vault keygen` or `age-keygen`. Refuses files that
    /// group or others can read: a backup key readable by other users is a leaked key.
    pub fn load(path: &Path) -> Result<Identities> {
        let content = secret_file::read_private(
            path,
            "identity",
            "set encryption.identity_file or VAULT_IDENTITY_FILE to the file `vault keygen` \
             wrote",
        )?;
        // The identity file format: `#` comments and one `AGE-SECRET-KEY-1...` per line.
        let keys = content
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .enumerate()
            .map(|(n, line)| {
                age::x25519::Identity::from_str(line).map_err(|_| {
                    Error::Key(format!(
                        "identity file `{}`: entry {} is not an age X25519 identity \
                         (`AGE-SECRET-KEY-1...`)",
                        path.display(),
                        n + 1
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if keys.is_empty() {
            return Err(Error::Key(format!(
                "identity file `{}` holds no X25519 identity (`AGE-SECRET-KEY-1...` line)",
                path.display()
            )));
        }
        Ok(Identities { keys })
    }

    /// Identities already in memory (tests, and callers that hold keys themselves).
    pub fn from_keys(keys: Vec<age::x25519::Identity>) -> Identities {
        Identities { keys }
    }

    /// The public keys of these identities, for "your identity is ..." messages.
    pub fn public_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    pub fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k as &dyn age::Identity)
    }
}

/// Writes a new identity to `path` (mode 0600, never overwriting) and returns its recipient.
pub fn generate_identity(path: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<String> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let content = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_string().expose_secret()
    );
    secret_file::write_new_private(path, content.as_bytes())?;
    Ok(recipient)
}

/// A fresh identity and the recipients that encrypt to it, for unit tests.
#[cfg(test)]
pub(crate) fn test_key() -> (age::x25519::Identity, Recipients) {
    let identity = age::x25519::Identity::generate();
    let recipients = Recipients::from_config(&EncryptionConfig {
        recipients: vec![identity.to_public().to_string()],
        recipients_file: None,
        identity_file: None,
    })
    .unwrap();
    (identity, recipients)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_a_private_file_that_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        let recipient = generate_identity(&path, chrono::Utc::now()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ids = Identities::load(&path).unwrap();
        assert_eq!(ids.public_keys(), vec![recipient]);
        let err = generate_identity(&path, chrono::Utc::now()).unwrap_err();
        assert!(err.to_string().contains("never overwrites"), "{err}");
    }

    #[test]
    fn loose_identity_permissions_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        generate_identity(&path, chrono::Utc::now()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identities::load(&path).err().expect("must refuse");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn recipients_carry_their_labels_from_the_config_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate_identity(&dir.path().join("a"), chrono::Utc::now()).unwrap();
        let b = generate_identity(&dir.path().join("b"), chrono::Utc::now()).unwrap();
        let c = generate_identity(&dir.path().join("c"), chrono::Utc::now()).unwrap();
        let file = dir.path().join("recipients.txt");
        std::fs::write(
            &file,
            format!("# break-glass key, in the safe\n{b}\n\n# stale comment\n\n{c} # auditors\n"),
        )
        .unwrap();
        let config = EncryptionConfig {
            recipients: vec![format!("{a} # ops key")],
            recipients_file: Some(file),
            identity_file: None,
        };
        let labelled = configured(&config).unwrap();
        let pairs: Vec<(&str, Option<&str>)> = labelled
            .iter()
            .map(|r| (r.key.as_str(), r.label.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            [
                (a.as_str(), Some("ops key")),
                (b.as_str(), Some("break-glass key, in the safe")),
                (c.as_str(), Some("auditors")),
            ]
        );
        assert_eq!(
            Recipients::from_config(&config).unwrap().public_keys(),
            [a, b, c]
        );
    }

    #[test]
    fn bad_recipient_names_itself() {
        let config = EncryptionConfig {
            recipients: vec!["age1notakey".into()],
            recipients_file: None,
            identity_file: None,
        };
        let err = Recipients::from_config(&config).err().expect("must fail");
        assert!(err.to_string().contains("age1notakey"), "{err}");
    }
}
