//! A test's workspace: a directory with an age identity, a signing key and the config files
//! written for it ([`ConfigBuilder`]: one way to write every test's `vault.toml`).

use std::path::{Path, PathBuf};

use super::{S3Env, run_ok, run_tool, vault_cmd};
use vault::postgres::cluster::ScratchCluster;

/// A directory with an identity, a signing key and a config file.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub identity: PathBuf,
    pub recipient: String,
    /// `vault keygen --signing`'s key file, and the public key line it printed.
    pub signing_key: PathBuf,
    pub signer: String,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let identity = dir.path().join("identity.txt");
        let recipient = run_ok(vault_cmd(None).args(["keygen", "--output"]).arg(&identity))
            .trim()
            .to_string();
        let signing_key = dir.path().join("signing.key");
        let signer = signing_keygen(&signing_key);
        Workspace {
            dir,
            identity,
            recipient,
            signing_key,
            signer,
        }
    }

    /// Another signing key in the workspace: (its file, its public key line).
    pub fn signing_keygen(&self, name: &str) -> (PathBuf, String) {
        let path = self.path(name);
        let line = signing_keygen(&path);
        (path, line)
    }

    /// Another identity in the workspace: (its file, its recipient).
    pub fn keygen(&self, name: &str) -> (PathBuf, String) {
        let path = self.path(name);
        let recipient = run_ok(vault_cmd(None).args(["keygen", "--output"]).arg(&path))
            .trim()
            .to_string();
        (path, recipient)
    }

    /// Signs `manifest` (a dump's, as JSON) anew with the workspace's signing key, as the
    /// writer of its objects as they are now (`stored` fetches one by key) would have: each
    /// object's file key commitment read from its header with the workspace's identity.
    pub fn sign_as_writer(
        &self,
        manifest: &mut serde_json::Value,
        stored: &dyn Fn(&str) -> Vec<u8>,
    ) {
        use vault::keys::header::{self, Header};
        let mut m: vault::catalog::Manifest = serde_json::from_value(manifest.clone()).unwrap();
        let identities = vault::keys::Identities::load(&self.identity).unwrap();
        let mut commitments = std::collections::BTreeMap::new();
        for key in [&m.dump.stored.key, &m.facts.key, &m.globals.key] {
            let bytes = stored(key);
            let file_key = Header::parse(&bytes)
                .unwrap()
                .file_key(&identities, &bytes)
                .unwrap();
            commitments.insert(key.clone(), header::commitment(&file_key));
        }
        let statement = vault::trust::Statement::for_dump(&m, &commitments).unwrap();
        let signer = vault::trust::SigningKey::load(&self.signing_key).unwrap();
        m.signature = Some(vault::trust::Signature::sign(&statement, &signer).unwrap());
        *manifest = serde_json::from_slice(&m.to_json()).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `vault.toml` with the given sections and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.path("vault.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Decrypts a stored facts object with the stock `age` CLI and this workspace's key.
    pub fn decrypt_facts(&self, file: &Path) -> vault::postgres::DumpFacts {
        let json = run_tool(
            "age",
            &[
                "-d",
                "-i",
                self.identity.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        );
        serde_json::from_slice(&json).expect("facts are JSON")
    }

    /// A config backing up `db` of `cluster` into `repository` (a TOML `[repository]` body),
    /// with `extra` sections after.
    pub fn config_for(
        &self,
        cluster: &ScratchCluster,
        db: &str,
        repository: &str,
        extra: &str,
    ) -> PathBuf {
        self.configure(&cluster.url(db))
            .repository(repository)
            .section(extra)
            .write()
    }

    /// Starts a config backing up the server at `source_url`: by default encrypted to this
    /// workspace's recipient, with its identity, and no repository until one is given.
    pub fn configure(&self, source_url: &str) -> ConfigBuilder<'_> {
        ConfigBuilder {
            workspace: self,
            top: Vec::new(),
            source: vec![format!("url = {}", toml_str(source_url))],
            repository: String::new(),
            recipients: vec![self.recipient.clone()],
            identity: Some(self.identity.clone()),
            signing_key: Some(self.signing_key.clone()),
            signers: Vec::new(),
            sections: Vec::new(),
        }
    }
}

/// `vault keygen --signing --output path`; returns the public key line (stdout's last).
fn signing_keygen(path: &Path) -> String {
    let out = run_ok(
        vault_cmd(None)
            .args(["keygen", "--signing", "--output"])
            .arg(path),
    );
    out.lines().last().unwrap().trim().to_string()
}

/// `text` as a TOML basic string (JSON's escapes are TOML's).
pub fn toml_str(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// One way to write a test's `vault.toml`: values are quoted for TOML here, sections come
/// out in the order vault's example config has them.
pub struct ConfigBuilder<'a> {
    workspace: &'a Workspace,
    /// Top-level keys (`state_dir`).
    top: Vec<String>,
    source: Vec<String>,
    repository: String,
    recipients: Vec<String>,
    identity: Option<PathBuf>,
    /// `[signing] key_file`.
    signing_key: Option<PathBuf>,
    /// `[trust] signers`, each as written in TOML (a quoted line or an inline table).
    signers: Vec<String>,
    /// Whole sections after `[encryption]`, as written.
    sections: Vec<String>,
}

impl ConfigBuilder<'_> {
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.top.push(format!(
            "state_dir = {}",
            toml_str(&dir.display().to_string())
        ));
        self
    }

    /// `source.databases`.
    pub fn databases(mut self, names: &[&str]) -> Self {
        let quoted: Vec<String> = names.iter().map(|n| toml_str(n)).collect();
        self.source
            .push(format!("databases = [{}]", quoted.join(", ")));
        self
    }

    /// Another `[source]` line, as written (`pg_bin_dir = "..."`).
    pub fn source_line(mut self, line: &str) -> Self {
        self.source.push(line.to_string());
        self
    }

    /// The `[repository]` body, as written.
    pub fn repository(mut self, body: &str) -> Self {
        self.repository = body.to_string();
        self
    }

    /// A local-directory repository.
    pub fn directory(self, path: &Path) -> Self {
        let body = format!("url = {}", toml_str(&path.display().to_string()));
        self.repository(&body)
    }

    /// The suite's S3 server under `prefix`.
    pub fn s3(self, s3: &S3Env, prefix: &str) -> Self {
        let body = s3_repository(s3, prefix);
        self.repository(&body)
    }

    /// Encrypt to these recipients instead of the workspace's.
    pub fn recipients(mut self, recipients: &[&str]) -> Self {
        self.recipients = recipients.iter().map(|r| r.to_string()).collect();
        self
    }

    /// `encryption.identity_file` at `path` instead of the workspace's.
    pub fn identity(mut self, path: &Path) -> Self {
        self.identity = Some(path.to_path_buf());
        self
    }

    /// No `encryption.identity_file` (a DB host that holds public keys only).
    pub fn without_identity(mut self) -> Self {
        self.identity = None;
        self
    }

    /// `[signing] key_file` at `path` instead of the workspace's key.
    pub fn signing_key(mut self, path: &Path) -> Self {
        self.signing_key = Some(path.to_path_buf());
        self
    }

    /// No `[signing]` (a host that only reads, or a config from before signing).
    pub fn without_signing(mut self) -> Self {
        self.signing_key = None;
        self
    }

    /// Trusts `line` (a public key line) for everything.
    pub fn trust(mut self, line: &str) -> Self {
        self.signers.push(toml_str(line));
        self
    }

    /// Trusts `line` only for `databases`.
    pub fn trust_for_databases(mut self, line: &str, databases: &[&str]) -> Self {
        let quoted: Vec<String> = databases.iter().map(|d| toml_str(d)).collect();
        self.signers.push(format!(
            "{{ key = {}, databases = [{}] }}",
            toml_str(line),
            quoted.join(", ")
        ));
        self
    }

    /// Sections after `[encryption]`, as written (`[retention]\nkeep_within = "1s"`).
    pub fn section(mut self, text: &str) -> Self {
        if !text.is_empty() {
            self.sections.push(text.to_string());
        }
        self
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for line in &self.top {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("[source]\n");
        for line in &self.source {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!(
            "\n[repository]\n{}\n\n[encryption]\n",
            self.repository
        ));
        let recipients: Vec<String> = self.recipients.iter().map(|r| toml_str(r)).collect();
        out.push_str(&format!("recipients = [{}]\n", recipients.join(", ")));
        if let Some(identity) = &self.identity {
            out.push_str(&format!(
                "identity_file = {}\n",
                toml_str(&identity.display().to_string())
            ));
        }
        if let Some(key) = &self.signing_key {
            out.push_str(&format!(
                "\n[signing]\nkey_file = {}\n",
                toml_str(&key.display().to_string())
            ));
        }
        if !self.signers.is_empty() {
            out.push_str(&format!(
                "\n[trust]\nsigners = [\n  {},\n]\n",
                self.signers.join(",\n  ")
            ));
        }
        for section in &self.sections {
            out.push('\n');
            out.push_str(section);
            out.push('\n');
        }
        out
    }

    /// Writes the workspace's `vault.toml`; returns its path.
    pub fn write(self) -> PathBuf {
        self.workspace.config(&self.text())
    }
}

/// `[repository]` body for the suite's S3 server under `prefix`.
pub fn s3_repository(s3: &S3Env, prefix: &str) -> String {
    format!(
        "url = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\npart_size_mib = 5",
        s3.bucket, s3.endpoint
    )
}

/// A private TMPDIR for vault, reachable by the `postgres` user its scratch and recovered
/// clusters run as when the suite runs as root: what vault leaves there can be seen.
pub fn private_tmp() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("vault-tmp-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}
