//! How the domain reports progress without printing. The binary picks the implementation:
//! an indicatif bar on a terminal, structured log lines otherwise.

/// Progress of one long operation. Implementations must be cheap to call from the
/// pipeline's blocking thread (`advance` is called once per read buffer).
pub trait Progress: Send + Sync {
    /// A new phase begins, e.g. "dumping app".
    fn phase(&self, message: &str);
    /// `bytes` more raw (uncompressed) bytes went through the pipeline.
    fn advance(&self, bytes: u64);
    /// Something the operator should know about, that does not fail the operation.
    fn warn(&self, message: &str);
    /// The operation ended (successfully or not); clear any live display.
    fn finish(&self);
}

/// Discards everything; for tests and library callers that do not care.
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _message: &str) {}
    fn advance(&self, _bytes: u64) {}
    fn warn(&self, _message: &str) {}
    fn finish(&self) {}
}
