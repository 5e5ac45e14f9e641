//! Fault injection for the crash-safety tests: with `VAULT_FAULT_KILL_AT=<point>` in its
//! environment, vault kills itself with SIGKILL (no clean-up, as a power cut or the OOM
//! killer would) when it reaches that named point. Without the variable, nothing happens.

/// Dies here if the environment names this point.
pub fn point(name: &str) {
    if std::env::var_os("VAULT_FAULT_KILL_AT").is_some_and(|v| v == name) {
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
