//! age keys: parsing recipients (public, all the DB host needs), loading identities (secret,
//! only for reading backups) with a permission check, and generating new identities.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use crate::config::EncryptionConfig;
use crate::error::{Error, Result};

/// The recipients a backup is encrypted to, with their canonical `age1...` text kept for
/// the manifest (so a reader can be told which keys would open a backup).
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
}

impl Recipients {
    /// Parses every configured recipient; any bad one is an error naming it.
    pub fn from_config(config: &EncryptionConfig) -> Result<Recipients> {
        let mut texts: Vec<(String, String)> = config
            .recipients
            .iter()
            .map(|r| (r.trim().to_string(), "encryption.recipients".to_string()))
            .collect();
        if let Some(path) = &config.recipients_file {
            let content = std::fs::read_to_string(path).map_err(|e| {
                Error::Key(format!(
                    "cannot read encryption.recipients_file `{}`: {e}",
                    path.display()
                ))
            })?;
            for (n, line) in content.lines().enumerate() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    texts.push((line.to_string(), format!("{}:{}", path.display(), n + 1)));
                }
            }
        }
        if texts.is_empty() {
            return Err(Error::Key(
                "no age recipients configured: add `recipients = [\"age1...\"]` or \
                 `recipients_file` under [encryption] (create a key with `vault keygen`)"
                    .into(),
            ));
        }
        let keys = texts
            .iter()
            .map(|(text, origin)| parse_recipient(text, origin))
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

    /// An encryptor to every recipient.
    pub fn encryptor(&self) -> age::Encryptor {
        age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
            .expect("the recipient list is non-empty and holds only X25519 recipients")
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
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::Key(format!(
                "cannot read identity file `{}`: {e}; set encryption.identity_file or \
                 VAULT_IDENTITY_FILE to the file `vault keygen` wrote",
                path.display()
            ))
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Key(format!(
                "identity file `{}` is accessible by group or others (mode {mode:03o}); \
                 fix it with `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
        let content = std::fs::read_to_string(path)
            .map_err(|e| Error::Key(format!("cannot read `{}`: {e}", path.display())))?;
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
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Key(format!(
                    "`{}` already exists; vault keygen never overwrites a key. \
                     Choose another --output path",
                    path.display()
                ))
            } else {
                Error::io(format!("cannot create `{}`", path.display()), e)
            }
        })?;
    let content = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_string().expose_secret()
    );
    file.write_all(content.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
    Ok(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

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
