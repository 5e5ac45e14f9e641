//! A pass-through reader over pg_basebackup's tar stream: every byte goes on unchanged into
//! the pipeline, while the 512-byte headers are read on the way to keep two small files
//! recovery depends on — `backup_label` (where replay starts) and `backup_manifest` (the
//! WAL range the backup needs) — and to count the files. Nothing is buffered beyond one
//! header and those two files.

use std::io::Read;

const BLOCK: u64 = 512;

/// The files kept whole as they pass.
const KEPT: [&str; 2] = ["backup_label", "backup_manifest"];

/// The kept files are small (the manifest lists every file, ~150 bytes each); past this, a
/// file is not kept and the backup fails as malformed rather than buffer without bound.
const KEPT_MAX: u64 = 256 * 1024 * 1024;

/// What the headers said, once the stream ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TarFacts {
    pub backup_label: Option<Vec<u8>>,
    pub backup_manifest: Option<Vec<u8>>,
    pub files: u64,
    /// Whether the end-of-archive marker (a zero block) was seen.
    pub ended: bool,
    /// A header that was not a tar header, or a kept file too large: the stream is not what
    /// pg_basebackup writes.
    pub malformed: Option<String>,
}

enum State {
    /// Collecting a header block.
    Header {
        block: Box<[u8; 512]>,
        filled: usize,
    },
    /// Inside an entry: `data` bytes of content, then `padding` to the next block.
    Entry {
        data: u64,
        padding: u64,
        kept: Option<(usize, Vec<u8>)>,
    },
    /// After the end marker or a malformed header: bytes pass, nothing is read.
    Done,
}

pub struct TarInspector<R> {
    inner: R,
    state: State,
    facts: TarFacts,
}

impl<R: Read> TarInspector<R> {
    pub fn new(inner: R) -> TarInspector<R> {
        TarInspector {
            inner,
            state: header(),
            facts: TarFacts::default(),
        }
    }

    pub fn into_facts(self) -> TarFacts {
        self.facts
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Header { block, filled } => {
                    let take = (512 - *filled).min(bytes.len());
                    block[*filled..*filled + take].copy_from_slice(&bytes[..take]);
                    *filled += take;
                    bytes = &bytes[take..];
                    if *filled == 512 {
                        let block = std::mem::replace(block, Box::new([0; 512]));
                        self.state = self.read_header(&block);
                    }
                }
                State::Entry {
                    data,
                    padding,
                    kept,
                } => {
                    if *data > 0 {
                        let take = (*data).min(bytes.len() as u64) as usize;
                        if let Some((_, content)) = kept {
                            content.extend_from_slice(&bytes[..take]);
                        }
                        *data -= take as u64;
                        bytes = &bytes[take..];
                    } else {
                        let take = (*padding).min(bytes.len() as u64) as usize;
                        *padding -= take as u64;
                        bytes = &bytes[take..];
                    }
                    if *data == 0 && *padding == 0 {
                        if let Some((which, content)) = kept.take() {
                            match which {
                                0 => self.facts.backup_label = Some(content),
                                _ => self.facts.backup_manifest = Some(content),
                            }
                        }
                        self.state = header();
                    }
                }
                State::Done => return,
            }
        }
    }

    fn read_header(&mut self, block: &[u8; 512]) -> State {
        if block.iter().all(|b| *b == 0) {
            self.facts.ended = true;
            return State::Done;
        }
        let Some(size) = parse_size(&block[124..136]) else {
            self.facts.malformed = Some("a tar header with an unreadable size".into());
            return State::Done;
        };
        if !checksum_matches(block) {
            self.facts.malformed = Some("a tar header whose checksum does not match".into());
            return State::Done;
        }
        let name = text(&block[0..100]);
        let prefix = text(&block[345..500]);
        let name = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let regular = matches!(block[156], b'0' | 0);
        if regular {
            self.facts.files += 1;
        }
        let kept = KEPT
            .iter()
            .position(|k| regular && name == *k)
            .and_then(|which| {
                if size > KEPT_MAX {
                    self.facts.malformed = Some(format!("`{name}` is {size} bytes"));
                    None
                } else {
                    Some((which, Vec::with_capacity(size as usize)))
                }
            });
        let padding = (BLOCK - size % BLOCK) % BLOCK;
        if size == 0 {
            if let Some((which, content)) = kept {
                match which {
                    0 => self.facts.backup_label = Some(content),
                    _ => self.facts.backup_manifest = Some(content),
                }
            }
            return header();
        }
        State::Entry {
            data: size,
            padding,
            kept,
        }
    }
}

fn header() -> State {
    State::Header {
        block: Box::new([0; 512]),
        filled: 0,
    }
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Octal, NUL- or space-terminated; or base-256 (high bit set) for sizes past 8 GiB.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(value);
    }
    let digits = text(field);
    let digits = digits.trim_matches(|c: char| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// The header checksum: the sum of its bytes with the checksum field read as spaces.
fn checksum_matches(block: &[u8; 512]) -> bool {
    let Some(stored) = parse_size(&block[148..156]) else {
        return false;
    };
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == stored
}

impl<R: Read> Read for TarInspector<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ustar archive as pg_basebackup writes one: regular files, a directory, two zero
    /// blocks at the end.
    pub(crate) fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entry = |name: &str, typeflag: u8, content: &[u8]| {
            let mut block = [0u8; 512];
            block[..name.len()].copy_from_slice(name.as_bytes());
            block[100..107].copy_from_slice(b"0000600");
            block[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
            block[156] = typeflag;
            block[257..263].copy_from_slice(b"ustar\0");
            block[148..156].copy_from_slice(b"        ");
            let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
            block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&block);
            out.extend_from_slice(content);
            out.resize(out.len().div_ceil(512) * 512, 0);
        };
        entry("global", b'5', b"");
        for (name, content) in files {
            entry(name, b'0', content);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn inspect(stream: &[u8], chunk: usize) -> (Vec<u8>, TarFacts) {
        let mut inspector = TarInspector::new(stream);
        let mut passed = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = inspector.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            passed.extend_from_slice(&buf[..n]);
        }
        (passed, inspector.into_facts())
    }

    #[test]
    fn the_label_and_manifest_are_kept_whatever_the_read_sizes() {
        let manifest = vec![b'm'; 2000];
        let stream = archive(&[
            ("PG_VERSION", b"15\n"),
            ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
            ("base/1/1259", &[7u8; 8192]),
            ("empty", b""),
            ("backup_manifest", &manifest),
        ]);
        for chunk in [1, 7, 511, 512, 513, 4096, 1 << 20] {
            let (passed, facts) = inspect(&stream, chunk);
            assert_eq!(passed, stream, "every byte passes unchanged");
            assert_eq!(
                facts.backup_label.as_deref(),
                Some(&b"START WAL LOCATION: 0/2000028\n"[..]),
                "chunk {chunk}"
            );
            assert_eq!(facts.backup_manifest.as_deref(), Some(&manifest[..]));
            assert_eq!(facts.files, 5);
            assert!(facts.ended);
            assert_eq!(facts.malformed, None);
        }
    }

    #[test]
    fn a_stream_that_is_not_a_tar_is_told_apart() {
        let (_, facts) = inspect(&[b'x'; 2048], 100);
        assert!(facts.malformed.is_some(), "{facts:?}");
        let mut truncated = archive(&[("backup_label", b"x")]);
        truncated.truncate(1024);
        let (_, facts) = inspect(&truncated, 100);
        assert!(!facts.ended);
    }
}
