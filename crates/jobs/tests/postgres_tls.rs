//! The job store over TLS, as managed PostgreSQL (Azure Database for
//! PostgreSQL, RDS, Cloud SQL) requires: `sslmode=require`, `verify-ca` and
//! `verify-full` with the CA in `sslrootcert`, against the local server
//! with TLS turned on by `.ci/run` (its CA in `FLEETSCORE_TEST_POSTGRES_CA`,
//! a server certificate for 127.0.0.1 and localhost).

use fleetscore_jobs::db::{JobStore, SqlStore};
use sqlx::Connection as _;

fn ca() -> String {
    std::env::var("FLEETSCORE_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!(
            "FLEETSCORE_TEST_POSTGRES_CA is not set: .ci/run turns TLS on in the local PostgreSQL \
             with a CA of its own and names it there"
        )
    })
}

/// Whether the connection to `url` is encrypted, as the server sees it.
async fn encrypted(url: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut c)
            .await
            .unwrap();
    ssl
}

#[tokio::test]
#[ignore = "needs PostgreSQL with TLS on (FLEETSCORE_TEST_POSTGRES_CA); .ci/run sets it up and runs this"]
async fn the_job_store_over_tls_in_every_sslmode() {
    let ca = ca();
    let db = fleetscore_jobs::db::ensure_database(
        "postgres://postgres@127.0.0.1:5432/postgres",
        "fs_test_tls",
    )
    .await
    .unwrap();
    let base = db.split('?').next().unwrap().to_string();
    for (host, query) in [
        ("127.0.0.1", "sslmode=require".to_string()),
        ("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={ca}")),
        ("127.0.0.1", format!("sslmode=verify-full&sslrootcert={ca}")),
        ("localhost", format!("sslmode=verify-full&sslrootcert={ca}")),
    ] {
        let url = format!("{}?{query}", base.replace("127.0.0.1", host));
        let store = SqlStore::open(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        // A round trip through the store's own statements.
        assert_eq!(store.last_fire("nightly").await.unwrap(), None, "{url}");
        assert!(encrypted(&url).await, "{url}: not encrypted");
    }

    // A CA that did not sign the server's certificate: refused, saying
    // what to change.
    let other = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let wrong = if std::path::Path::new(other).exists() {
        other.to_string()
    } else {
        // Any CA but ours: the system's first.
        "/etc/ssl/certs/ca-certificates.crt".to_string()
    };
    let url = format!("{base}?sslmode=verify-full&sslrootcert={wrong}");
    let e = SqlStore::open(&url).await.unwrap_err().to_string();
    assert!(e.contains("sslrootcert"), "{e}");
}

#[test]
fn passwords_never_reach_messages() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Nothing listens on port 9: the error names the URL, without its
    // password.
    let e = rt
        .block_on(SqlStore::open(
            "postgres://fleet:hunter2-secret@127.0.0.1:9/fs?sslmode=require",
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("postgres://fleet:***@127.0.0.1:9/fs"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
