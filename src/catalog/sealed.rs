//! The small sealed objects stored beside a dump: its facts, its globals, a verify's full
//! report. Each is age-encrypted to the backup's recipients in memory and stored in one
//! PUT; reading one checks it against its manifest entry before decrypting it. The facts
//! object doubles as the key check: opening it proves an identity opens the backup, before
//! anything heavy starts.

use bytes::Bytes;

use super::{Manifest, StoredObject};
use crate::error::{Error, Result};
use crate::keys::header::{NotVouched, Opener};
use crate::keys::{Identities, Recipients};
use crate::pipeline::{self, Digest};
use crate::postgres::DumpFacts;
use crate::storage::ObjectStore;

/// A sealed object as stored: its manifest entry, the commitment to its file key that a
/// signed statement binds it by, and its plain size and sha256 (the statement records them
/// for the break-glass scripts).
pub struct Sealed {
    pub object: StoredObject,
    pub file_key_commitment: [u8; 32],
    pub plain: Digest,
}

/// Encrypts `plain` to `recipients` and stores it under `key`.
pub async fn seal(
    store: &dyn ObjectStore,
    key: &str,
    plain: &[u8],
    recipients: &Recipients,
) -> Result<Sealed> {
    let (sealed, file_key_commitment) = pipeline::encrypt_small(plain, recipients)
        .map_err(|e| Error::io(format!("encrypting {key} failed"), e))?;
    let digest = Digest::of(&sealed);
    store.put(key, Bytes::from(sealed)).await?;
    Ok(Sealed {
        object: StoredObject {
            key: key.to_string(),
            size_bytes: digest.bytes,
            sha256: digest.sha256_hex(),
        },
        file_key_commitment,
        plain: Digest::of(plain),
    })
}

/// Fetches a sealed object, checks it against its manifest entry (or, during a key
/// rotation, its `rotated` entry) and decrypts it, with `opener` (which, for a signed
/// backup, holds the commitment its file key must match). `what` names it in messages
/// ("facts", "globals").
pub async fn open(
    store: &dyn ObjectStore,
    opener: Opener<'_>,
    object: &StoredObject,
    rotated: Option<&StoredObject>,
    what: &str,
) -> Result<Vec<u8>> {
    let sealed = store.get(&object.key).await?;
    let digest = Digest::of(&sealed);
    if !object.matches(rotated, digest.bytes, &digest.sha256_hex()) {
        return Err(Error::Integrity(format!(
            "the {what} object `{}` does not match its manifest ({} bytes, sha256 {}; \
             expected {} bytes, sha256 {}): it was altered or damaged in the repository",
            object.key,
            digest.bytes,
            digest.sha256_hex(),
            object.size_bytes,
            object.sha256
        )));
    }
    pipeline::decrypt_small(&sealed, opener).map_err(|e| {
        if e.get_ref().is_some_and(|inner| inner.is::<NotVouched>()) {
            return Error::Untrusted(format!(
                "the {what} object `{}` is refused: {e}; vault reads nothing of it",
                object.key
            ));
        }
        Error::Integrity(format!(
            "cannot decrypt the {what} object `{}`: {e}",
            object.key
        ))
    })
}

/// How to open `object` of `backup`: the identities, and the commitment the backup's
/// accepted signature names for it (an error if the backup was not judged, or names no such
/// object).
pub fn opener<'a>(
    backup: &Manifest,
    identities: &'a Identities,
    object: &StoredObject,
) -> Result<Opener<'a>> {
    Ok(Opener {
        identities,
        commitment: backup.accepted.commitment(&object.key)?,
        check: None,
    })
}

/// Checks the identity opens `backup` and reads its dump-time facts.
pub async fn read_facts(
    store: &dyn ObjectStore,
    identities: &Identities,
    backup: &Manifest,
) -> Result<DumpFacts> {
    check_identity(backup, identities)?;
    let rotated = backup.encryption.rotated(&backup.facts.key);
    let opener = opener(backup, identities, &backup.facts)?;
    let facts_json = open(store, opener, &backup.facts, rotated, "facts").await?;
    serde_json::from_slice(&facts_json).map_err(|e| {
        Error::Integrity(format!(
            "the facts of backup {} are not readable: {e}",
            backup.id
        ))
    })
}

/// Reads the roles and tablespaces saved with `backup` (`pg_dumpall --globals-only`).
pub async fn read_globals(
    store: &dyn ObjectStore,
    identities: &Identities,
    backup: &Manifest,
) -> Result<String> {
    let rotated = backup.encryption.rotated(&backup.globals.key);
    let opener = opener(backup, identities, &backup.globals)?;
    let sql = open(store, opener, &backup.globals, rotated, "globals").await?;
    Ok(String::from_utf8_lossy(&sql).into_owned())
}

/// The identity must match one of the backup's recipients; says which keys would.
pub fn check_identity(backup: &Manifest, identities: &Identities) -> Result<()> {
    check_recipients(
        &format!("backup {}", backup.id),
        &backup.encryption.readers(),
        identities,
    )
}

/// The identity must match one of `recipients` (of `owner`: "base backup …").
pub fn check_recipients(owner: &str, recipients: &[String], identities: &Identities) -> Result<()> {
    let mine = identities.public_keys();
    if recipients.iter().any(|r| mine.contains(r)) {
        return Ok(());
    }
    Err(Error::Key(format!(
        "{owner} is encrypted to recipients {}; your identity is {}: use the identity file \
         of one of those recipients (encryption.identity_file or VAULT_IDENTITY_FILE)",
        recipients.join(", "),
        mine.join(", ")
    )))
}
