//! The age v1 header, read and written by hand for key rotation (C2SP age.md): the `age`
//! crate keeps its header parser and MAC private, so vault parses the stanzas, checks the
//! header MAC with the file key an identity unwraps, and writes a new header that wraps the
//! *same* file key to a new set of recipients. The payload (16-byte nonce, then 64 KiB
//! ChaCha20-Poly1305 chunks) depends only on the file key and the nonce, so the new header in
//! front of the old payload bytes is a valid age file that stock `age` decrypts.
//!
//! ```text
//! age-encryption.org/v1\n
//! -> X25519 <share>\n            one stanza per recipient (+ a grease stanza), body in
//! <base64, 64 per line>\n        canonical unpadded base64 ending with a line < 64 chars
//! --- <base64 HMAC-SHA256>\n     MAC over everything up to and including "---"
//! <payload>
//! ```

use std::io::{self, Read};

use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Identities, Recipients};

const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";
const MAC_MARK: &[u8] = b"---";
const BODY_COLUMNS: usize = 64;
/// The stanza vault adds to a header it rewrites, naming (by a fingerprint) the recipients
/// it wraps to: a rotation run again knows which objects are done without opening them.
/// Identities ignore stanzas they do not know (age.md: "MUST ignore unrecognized stanzas").
pub const MARKER_TAG: &str = "vault-recipients";
/// vault's headers are a few hundred bytes; this bounds what is read looking for the end.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why a header could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("it is not an age v1 file")]
    NotAge,
    #[error("its age header is malformed: {0}")]
    Malformed(&'static str),
    #[error("its age header has no end within the first {MAX_HEADER_BYTES} bytes")]
    TooLong,
    #[error("it is encrypted with a passphrase (scrypt), which vault never writes")]
    Passphrase,
    #[error("none of the identities opens it")]
    NoIdentity,
    #[error("its header MAC does not match: the header was altered")]
    BadMac,
    /// Not what a trusted writer vouched for: why.
    #[error("{0}")]
    NotVouched(String),
}

/// A parsed age header: its stanzas and where the payload starts.
pub struct Header {
    pub stanzas: Vec<Stanza>,
    /// The bytes the MAC covers: from the version line through `---`.
    mac_input_len: usize,
    mac: [u8; 32],
    /// The header's length in bytes; the payload (nonce first) starts here.
    pub len: usize,
}

impl Header {
    /// Parses the header at the start of `bytes` (which may go on into the payload).
    /// `Err(TooLong)` when `bytes` ends before the header does: read more, up to
    /// [`MAX_HEADER_BYTES`].
    pub fn parse(bytes: &[u8]) -> Result<Header, HeaderError> {
        if !bytes.starts_with(VERSION_LINE) {
            if VERSION_LINE.starts_with(&bytes[..bytes.len().min(VERSION_LINE.len())]) {
                return Err(HeaderError::TooLong);
            }
            return Err(HeaderError::NotAge);
        }
        let mut at = VERSION_LINE.len();
        let mut stanzas = Vec::new();
        loop {
            let line = next_line(bytes, at)?;
            if let Some(rest) = line.strip_prefix(b"-> ") {
                at += line.len() + 1;
                let text = std::str::from_utf8(rest)
                    .map_err(|_| HeaderError::Malformed("a stanza line is not text"))?;
                let mut words = text.split(' ');
                let tag = words.next().unwrap_or_default().to_string();
                let args: Vec<String> = words.map(str::to_string).collect();
                if tag.is_empty() || args.iter().any(String::is_empty) {
                    return Err(HeaderError::Malformed("a stanza has an empty argument"));
                }
                let mut encoded = Vec::new();
                loop {
                    let body_line = next_line(bytes, at)?;
                    // A body that filled its last line exactly may end without a short line
                    // (the legacy encoding): the next stanza or the MAC line begins instead.
                    if body_line.starts_with(b"-> ") || body_line.starts_with(MAC_MARK) {
                        break;
                    }
                    if body_line.len() > BODY_COLUMNS {
                        return Err(HeaderError::Malformed("a stanza body line is too long"));
                    }
                    at += body_line.len() + 1;
                    encoded.extend_from_slice(body_line);
                    if body_line.len() < BODY_COLUMNS {
                        break;
                    }
                }
                let body = STANDARD_NO_PAD
                    .decode(&encoded)
                    .map_err(|_| HeaderError::Malformed("a stanza body is not base64"))?;
                stanzas.push(Stanza { tag, args, body });
            } else if let Some(rest) = line.strip_prefix(MAC_MARK) {
                let encoded = rest
                    .strip_prefix(b" ")
                    .ok_or(HeaderError::Malformed("the MAC line has no MAC"))?;
                let mac: [u8; 32] = STANDARD_NO_PAD
                    .decode(encoded)
                    .ok()
                    .and_then(|m| m.try_into().ok())
                    .ok_or(HeaderError::Malformed("the MAC is not 32 base64 bytes"))?;
                if stanzas.is_empty() {
                    return Err(HeaderError::Malformed("it has no recipient stanza"));
                }
                if stanzas.iter().any(|s| s.tag == "scrypt") {
                    return Err(HeaderError::Passphrase);
                }
                return Ok(Header {
                    stanzas,
                    mac_input_len: at + MAC_MARK.len(),
                    mac,
                    len: at + line.len() + 1,
                });
            } else {
                return Err(HeaderError::Malformed(
                    "a line is neither a stanza nor the MAC",
                ));
            }
        }
    }

    /// The file key, unwrapped by one of `identities` and proven by the header's MAC over
    /// `original` (the bytes this header was parsed from: the MAC covers them as stored).
    pub fn file_key(
        &self,
        identities: &Identities,
        original: &[u8],
    ) -> Result<FileKey, HeaderError> {
        let file_key = identities
            .keys
            .iter()
            .find_map(|identity| {
                age::Identity::unwrap_stanzas(identity, &self.stanzas).and_then(Result::ok)
            })
            .ok_or(HeaderError::NoIdentity)?;
        let mut mac = header_mac(&file_key);
        mac.update(&original[..self.mac_input_len]);
        mac.verify_slice(&self.mac)
            .map_err(|_| HeaderError::BadMac)?;
        Ok(file_key)
    }

    /// The signature stanzas (`SIGNATURE_TAG`) this header carries.
    pub fn signatures(&self) -> impl Iterator<Item = &Stanza> {
        self.stanzas.iter().filter(|s| s.tag == SIGNATURE_TAG)
    }

    /// The recipients' fingerprint a rotation wrote into this header, if one did.
    pub fn marker(&self) -> Option<&str> {
        let stanza = self.stanzas.iter().find(|s| s.tag == MARKER_TAG)?;
        stanza.args.first().map(String::as_str)
    }
}

/// The line starting at `at`, without its `\n`.
fn next_line(bytes: &[u8], at: usize) -> Result<&[u8], HeaderError> {
    let rest = &bytes[at.min(bytes.len())..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) => Ok(&rest[..end]),
        None => Err(HeaderError::TooLong),
    }
}

fn header_mac(file_key: &FileKey) -> Hmac<Sha256> {
    let key = age_core::primitives::hkdf(&[], b"header", file_key.expose_secret());
    Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length")
}

/// `Stanza` is not `Clone`.
fn copy_stanza(stanza: &Stanza) -> Stanza {
    Stanza {
        tag: stanza.tag.clone(),
        args: stanza.args.clone(),
        body: stanza.body.clone(),
    }
}

/// The stanza a WAL file's header carries its writer's signature in (`trust`): identities
/// ignore it, as they ignore every stanza they do not know.
pub const SIGNATURE_TAG: &str = "vault-signature";

/// A new header wrapping `file_key` to `recipients` (each with a fresh ephemeral share, as
/// the spec requires), with a grease stanza as the `age` crate adds, and its MAC; the
/// signature stanzas of `old` (the header it replaces) are carried over.
pub fn wrap(file_key: &FileKey, recipients: &Recipients, old: Option<&Header>) -> Vec<u8> {
    let mut stanzas: Vec<Stanza> = recipients
        .keys
        .iter()
        .flat_map(|r| {
            age::Recipient::wrap_file_key(r, file_key)
                .expect("X25519 recipients wrap any file key")
                .0
        })
        .collect();
    stanzas.push(Stanza {
        tag: MARKER_TAG.to_string(),
        args: vec![recipients.fingerprint()],
        body: Vec::new(),
    });
    stanzas.extend(
        old.into_iter()
            .flat_map(Header::signatures)
            .map(copy_stanza),
    );
    stanzas.push(age_core::format::grease_the_joint());
    let mut out = VERSION_LINE.to_vec();
    for stanza in &stanzas {
        out.extend_from_slice(b"-> ");
        out.extend_from_slice(stanza.tag.as_bytes());
        for arg in &stanza.args {
            out.push(b' ');
            out.extend_from_slice(arg.as_bytes());
        }
        out.push(b'\n');
        let encoded = STANDARD_NO_PAD.encode(&stanza.body);
        let mut lines = encoded.as_bytes().chunks(BODY_COLUMNS).peekable();
        let mut last_len = 0;
        while let Some(line) = lines.next() {
            out.extend_from_slice(line);
            out.push(b'\n');
            last_len = line.len();
            if lines.peek().is_none() {
                break;
            }
        }
        // The body always ends with a line shorter than 64 characters (maybe empty).
        if encoded.is_empty() || last_len == BODY_COLUMNS {
            out.push(b'\n');
        }
    }
    out.extend_from_slice(MAC_MARK);
    let mut mac = header_mac(file_key);
    mac.update(&out);
    let tag = mac.finalize().into_bytes();
    out.push(b' ');
    out.extend_from_slice(STANDARD_NO_PAD.encode(tag).as_bytes());
    out.push(b'\n');
    out
}

/// An identity that knows the file key already: opening a file with it checks the header's
/// MAC and every payload chunk (including the final-chunk flag) through the `age` crate's own
/// decryptor under exactly that key, with no secret key of a recipient.
struct KnownFileKey([u8; 16]);

impl age::Identity for KnownFileKey {
    fn unwrap_stanza(&self, _: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        Some(Ok(FileKey::new(Box::new(self.0))))
    }
}

/// The plain bytes of the age file `file` (header, then payload), decrypted under
/// `file_key`: reading fails at the first chunk that does not authenticate under it.
pub fn decrypt_with<R: Read>(file: R, file_key: &FileKey) -> io::Result<impl Read + use<R>> {
    let identity = KnownFileKey(*file_key.expose_secret());
    let decryptor = age::Decryptor::new_buffered(io::BufReader::new(file))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decrypts the whole age stream `file` (a new header, then the payload) with `file_key`
/// and discards the plaintext: an error if the MAC or any chunk does not authenticate.
pub fn authenticate(file: impl Read, file_key: &FileKey) -> io::Result<u64> {
    io::copy(&mut decrypt_with(file, file_key)?, &mut io::sink())
}

/// What binds a signed statement to one age file: HKDF-SHA256 of its file key under a label
/// of vault's own (age derives its header MAC key and payload key under other labels, so
/// this reveals nothing of either). Only someone who holds the file key — its writer, or an
/// identity that unwraps it — can compute it, and a header rewrapped by a key rotation keeps
/// it.
pub fn commitment(file_key: &FileKey) -> [u8; 32] {
    age_core::primitives::hkdf(&[], COMMITMENT_LABEL, file_key.expose_secret())
}

const COMMITMENT_LABEL: &[u8] = b"vault.file-key-commitment.v1";

/// A recipient that wraps nothing: it remembers the commitment of the file key the
/// encryptor chose (the `age` crate wraps the file key for every recipient when it builds
/// the encryptor, and never shows it otherwise), and adds `extra` stanzas to the header (a
/// WAL file's signature), which the header MAC then covers.
pub struct CommitmentWitness {
    commitment: std::sync::OnceLock<[u8; 32]>,
    extra: Vec<Stanza>,
}

impl CommitmentWitness {
    /// A witness adding `extra` stanzas to the header.
    pub fn with(extra: Vec<Stanza>) -> CommitmentWitness {
        CommitmentWitness {
            commitment: std::sync::OnceLock::new(),
            extra,
        }
    }

    /// The commitment, once an encryptor was built with this witness among its recipients.
    pub fn commitment(&self) -> [u8; 32] {
        *self
            .commitment
            .get()
            .expect("the encryptor wraps its file key for every recipient when it is built")
    }
}

impl age::Recipient for CommitmentWitness {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, std::collections::HashSet<String>), age::EncryptError> {
        let _ = self.commitment.set(commitment(file_key));
        let extra = self.extra.iter().map(copy_stanza).collect();
        Ok((extra, std::collections::HashSet::new()))
    }
}

/// A check of a header's own stanzas before anything else of the file is read (a WAL file
/// carries its writer's signature there): the error says why it is refused.
pub type HeaderCheck = dyn Fn(&Header) -> Result<(), String> + Send + Sync;

/// How to open one age file: with these identities, and, when its writer signed it, only if
/// its file key is the one committed to (a manifest's statement) or its header passes
/// `check` (a WAL file's signature stanza).
#[derive(Clone, Copy)]
pub struct Opener<'a> {
    pub identities: &'a Identities,
    pub commitment: Option<[u8; 32]>,
    pub check: Option<&'a HeaderCheck>,
}

impl<'a> Opener<'a> {
    /// Opens with `identities` and no signed commitment to match: for what something other
    /// than a signature vouches for (a WAL file's name carries its sha256), and for tests.
    pub fn without_signature(identities: &'a Identities) -> Opener<'a> {
        Opener {
            identities,
            commitment: None,
            check: None,
        }
    }

    /// The file key of the header parsed from `start`, unwrapped by an identity, proven by
    /// the header MAC and, when a commitment is expected, matching it.
    pub fn file_key(&self, parsed: Header, start: &[u8]) -> Result<FileKey, HeaderError> {
        if let Some(check) = self.check {
            check(&parsed).map_err(HeaderError::NotVouched)?;
        }
        let file_key = parsed.file_key(self.identities, start)?;
        match self.commitment {
            Some(expected) if commitment(&file_key) != expected => Err(HeaderError::NotVouched(
                "it is not the object its writer signed: its age file key is not the one \
                     the signed statement commits to (someone replaced it in the repository)"
                    .into(),
            )),
            _ => Ok(file_key),
        }
    }

    /// Decrypts a whole in-memory age file.
    pub fn decrypt(&self, sealed: &[u8]) -> io::Result<Vec<u8>> {
        let header = Header::parse(sealed).map_err(HeaderError::into_io)?;
        let file_key = self
            .file_key(header, sealed)
            .map_err(HeaderError::into_io)?;
        let mut plain = Vec::new();
        decrypt_with(sealed, &file_key)?.read_to_end(&mut plain)?;
        Ok(plain)
    }
}

/// Reads the start of an age stream until its header is whole (or clearly not one): the
/// bytes read, and the header parsed from them.
pub fn read_start(reader: &mut impl Read) -> io::Result<(Vec<u8>, Result<Header, HeaderError>)> {
    let mut start = Vec::with_capacity(4096);
    let parsed = loop {
        let mut buf = [0u8; 4096];
        let n = reader.read(&mut buf)?;
        start.extend_from_slice(&buf[..n]);
        match Header::parse(&start) {
            Err(HeaderError::TooLong) if n > 0 && start.len() < MAX_HEADER_BYTES => continue,
            other => break other,
        }
    };
    Ok((start, parsed))
}

/// Marks an I/O error as "no trusted writer vouches for this object" (why): the feed turns it
/// into `Error::Untrusted`, not damage.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotVouched(pub String);

impl HeaderError {
    /// As an I/O error of kind `InvalidData` (the reading side's damage), except a key that
    /// is not the signed one, marked [`NotVouched`].
    pub fn into_io(self) -> io::Error {
        match self {
            HeaderError::NotVouched(why) => {
                io::Error::new(io::ErrorKind::InvalidData, NotVouched(why))
            }
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_key;

    fn encrypt(plain: &[u8], recipients: &Recipients) -> Vec<u8> {
        crate::pipeline::encrypt_small(plain, recipients).unwrap().0
    }

    fn decrypt(file: &[u8], identity: age::x25519::Identity) -> io::Result<Vec<u8>> {
        crate::pipeline::decrypt_small(
            file,
            Opener::without_signature(&Identities::from_keys(vec![identity])),
        )
    }

    #[test]
    fn a_new_header_before_the_old_payload_opens_with_the_new_key_only() {
        let (a, only_a) = test_key();
        let (b, only_b) = test_key();
        // Sizes around the 64 KiB chunk edge.
        for size in [0usize, 1, 65_536, 65_537, 200_000] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let old = encrypt(&plain, &only_a);
            let header = Header::parse(&old).unwrap();
            let a_ids = Identities::from_keys(vec![a.clone()]);
            let file_key = header.file_key(&a_ids, &old).unwrap();
            let mut new = wrap(&file_key, &only_b, None);
            let new_len = new.len();
            new.extend_from_slice(&old[header.len..]);
            let parsed = Header::parse(&new).unwrap();
            assert_eq!(parsed.len, new_len);
            assert_eq!(parsed.marker(), Some(only_b.fingerprint().as_str()));
            assert_eq!(header.marker(), None, "the age crate writes no marker");
            assert_eq!(decrypt(&new, b.clone()).unwrap(), plain, "size {size}");
            assert!(
                decrypt(&new, a.clone()).is_err(),
                "the removed key must not open it"
            );
            assert_eq!(authenticate(&new[..], &file_key).unwrap(), size as u64);
        }
    }

    #[test]
    fn a_changed_header_or_payload_is_refused() {
        let (a, only_a) = test_key();
        let ids = Identities::from_keys(vec![a]);
        let old = encrypt(&[7u8; 100_000], &only_a);
        let header = Header::parse(&old).unwrap();
        let file_key = header.file_key(&ids, &old).unwrap();

        // A byte of the grease stanza's arguments or body changed: the MAC catches it.
        let mut altered = old.clone();
        let grease_line = header.len - 60;
        altered[grease_line] ^= 0x01;
        let reopened = Header::parse(&altered).and_then(|h| h.file_key(&ids, &altered));
        assert!(reopened.is_err());

        // A payload byte flipped: the chunk fails authentication.
        let mut flipped = old.clone();
        flipped[header.len + 5000] ^= 0x01;
        assert!(authenticate(&flipped[..], &file_key).is_err());
        // Cut short: the final-chunk flag is missing.
        assert!(authenticate(&old[..old.len() - 100], &file_key).is_err());
    }

    #[test]
    fn wrong_identity_unknown_format_and_truncated_headers() {
        let (_, only_a) = test_key();
        let (b, _) = test_key();
        let old = encrypt(b"hello", &only_a);
        let header = Header::parse(&old).unwrap();
        assert_eq!(
            header.file_key(&Identities::from_keys(vec![b]), &old).err(),
            Some(HeaderError::NoIdentity)
        );
        assert_eq!(Header::parse(b"PGDMP").err(), Some(HeaderError::NotAge));
        assert_eq!(
            Header::parse(&old[..header.len - 10]).err(),
            Some(HeaderError::TooLong)
        );
        assert_eq!(Header::parse(&old[..5]).err(), Some(HeaderError::TooLong));
    }
}
