//! `vault keygen`: a new age identity for reading backups.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the identity (created with mode 0600; never overwritten).
    #[arg(long, short, default_value = "vault-identity.txt")]
    pub output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let recipient = vault::keys::generate_identity(&args.output, chrono::Utc::now())?;
    eprintln!(
        "wrote a new identity to {} (mode 0600). Keep it off the database host: backups need \
         only the recipient below, in [encryption] recipients.",
        args.output.display()
    );
    println!("{recipient}");
    Ok(())
}
