//! The test harness's own promises: a scratch cluster is gone — server stopped, directory
//! removed — when its owner is dropped, also when a test panics.

mod common;

use common::*;

#[test]
fn scratch_cluster_is_stopped_and_removed_even_when_a_test_panics() {
    let (port, data_dir) = std::panic::catch_unwind(|| {
        let pg = cluster_with("app", "CREATE TABLE t AS SELECT 1 AS x");
        let dir = pg
            .psql("app", "SHOW data_directory")
            .unwrap()
            .trim()
            .to_string();
        let port = pg.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        std::panic::resume_unwind(Box::new((port, dir)));
    })
    .unwrap_err()
    .downcast::<(u16, String)>()
    .map(|b| *b)
    .expect("the panic carries the cluster's port and directory");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stopped"
    );
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "{data_dir} was removed"
    );
}
