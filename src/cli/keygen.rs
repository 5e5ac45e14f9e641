//! `vault keygen`: a new age identity for reading backups, or (`--signing`) a signing key for
//! a host that writes to the repository.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the key (created with mode 0600; never overwritten). Default:
    /// vault-identity.txt, or vault-signing.key with --signing.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// A signing key (OpenSSH Ed25519) for a host that writes backups, WAL or records,
    /// instead of an age identity. It signs; it opens nothing.
    #[arg(long)]
    pub signing: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.signing {
        let output = args
            .output
            .unwrap_or_else(|| PathBuf::from("vault-signing.key"));
        let host = vault::daemon::notify::host_name();
        let key = vault::trust::SigningKey::generate(&format!("vault@{host}"));
        key.write_new(&output)?;
        eprintln!(
            "wrote a new signing key to {} (mode 0600). Set [signing] key_file to it on this \
             host, and add the public key below to [trust] signers on every host that reads \
             backups (limited to this host's databases and clusters).",
            output.display()
        );
        println!("{}", key.public().to_line());
        return Ok(());
    }
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from("vault-identity.txt"));
    let recipient = vault::keys::generate_identity(&output, chrono::Utc::now())?;
    eprintln!(
        "wrote a new identity to {} (mode 0600). Keep it off the database host: backups need \
         only the recipient below, in [encryption] recipients.",
        output.display()
    );
    println!("{recipient}");
    Ok(())
}
