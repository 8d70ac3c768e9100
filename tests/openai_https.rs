//! The `openai` provider over https: a TLS server on 127.0.0.1 with a
//! certificate from a test CA (`tests/fixtures/tls`), trusted through
//! `SSL_CERT_FILE` the way an admin trusts a private CA.
//!
//! A test binary of its own because it changes the process environment.

mod openai_server;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use openai_server::{Server, Step};
use pimainteno::config::LoadOptions;
use pimainteno::exit::{Exit, code_for};
use pimainteno::llm::openai::OpenAi;
use pimainteno::llm::{Answer, LlmError, Provider, Purpose, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// Trust the test CA (and only it). Every test calls this before any
/// provider loads its roots, so nothing reads the variable while it changes.
fn trust_test_ca() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: runs once, before any test in this binary starts a thread
        // that reads the environment (the Once blocks the other tests).
        unsafe {
            std::env::set_var("SSL_CERT_FILE", fixture("ca.pem"));
            std::env::remove_var("SSL_CERT_DIR");
        }
    });
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    Arc::new(cfg)
}

fn ask(endpoint: &str) -> Result<Answer, LlmError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pimainteno.toml");
    std::fs::write(
        &file,
        format!(
            "[llm]\nprovider = \"openai\"\nmodel = \"test-model\"\nendpoint = \"{endpoint}\"\nretries = 2\ntimeout = \"20s\"\n\
             [cache]\npath = \"{}\"\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let settings = pimainteno::config::load(&LoadOptions {
        path: Some(file),
        defaults_if_missing: false,
    })
    .unwrap();
    OpenAi::new(&settings.llm)
        .with_backoff(Duration::from_millis(10))
        .complete(&Request {
            purpose: Purpose::Summary,
            prompt: "Summarize.",
            workdir: dir.path(),
            check: None,
            exclude: &[],
            schema: None,
            sandbox: None,
        })
}

#[test]
fn https_with_a_trusted_certificate() {
    trust_test_ca();
    let server = Server::start_tls(vec![Step::answer("over TLS")], tls_config());
    let endpoint = format!("https://127.0.0.1:{}/v1", server.addr.port());
    let answer = ask(&endpoint).unwrap();
    assert_eq!(answer.text, "over TLS");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].json()["messages"][1]["content"], "Summarize.");
}

#[test]
fn https_to_a_plain_http_server_is_a_clear_tls_error() {
    trust_test_ca();
    let server = Server::start(vec![]);
    let endpoint = format!("https://127.0.0.1:{}/v1", server.addr.port());
    let start = Instant::now();
    let err = ask(&endpoint).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LlmError::Unavailable { .. }), "{msg}");
    assert!(msg.contains("TLS"), "{msg}");
    // Not retried: a protocol mismatch does not fix itself.
    assert!(!msg.contains("attempts"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(code_for(&anyhow::Error::from(err)), Exit::Unavailable);
}
