//! The registry Bearer-token flow (`WWW-Authenticate: Bearer realm=…,service=…`, token
//! fetched with the user's Basic credentials, then `Authorization: Bearer`), as quay.io
//! and registry.redhat.io use it. Debian's docker-registry cannot issue tokens without
//! a separate token service, so this test runs a minimal scripted token server +
//! registry on loopback that speaks exactly that exchange, and checks every request.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use layerboot::oci::reference::ImageRef;
use layerboot::registry::auth::{AuthFile, AuthStore, Credentials};
use layerboot::registry::{self, RegistryOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TOKEN: &str = "tok-3f9a1c";
const USER: &str = "robot";
const PASS: &str = "bearer-pass-61e2";

struct Served {
    manifest: Vec<u8>,
    manifest_digest: String,
    config: Vec<u8>,
    config_digest: String,
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", layerboot::io::sha256_reader(b).unwrap().0)
}

fn content() -> Served {
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"ostree.bootable":"true","ostree.commit":"abc"}},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let config_digest = sha(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
        config.len()
    )
    .into_bytes();
    Served {
        manifest_digest: sha(&manifest),
        manifest,
        config,
        config_digest,
    }
}

async fn serve(listener: TcpListener, served: Arc<Served>, log: Arc<Mutex<Vec<String>>>) {
    let addr = listener.local_addr().unwrap();
    loop {
        let (sock, _) = listener.accept().await.unwrap();
        let served = served.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            loop {
                let mut request_line = String::new();
                if r.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                    return;
                }
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).await.unwrap();
                    if h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some(v) = h
                        .strip_prefix("authorization: ")
                        .or_else(|| h.strip_prefix("Authorization: "))
                    {
                        auth = v.trim().to_string();
                    }
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(format!("{path} [{auth}]"));
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
                );
                let bearer = format!("Bearer {TOKEN}");
                let challenge =
                    format!("Bearer realm=\"http://{addr}/token\",service=\"test-registry\"");
                let (status, headers, body): (&str, Vec<(String, String)>, Vec<u8>) = if path
                    == "/v2/"
                {
                    if auth == bearer {
                        ("200 OK", vec![], b"{}".to_vec())
                    } else {
                        ("401 Unauthorized", vec![("WWW-Authenticate".into(), challenge)], br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec())
                    }
                } else if path.starts_with("/token?") {
                    let scoped = path.contains("scope=repository%3Aacme%2Fimage%3Apull")
                        && path.contains("service=test-registry");
                    if auth == basic && scoped {
                        (
                            "200 OK",
                            vec![],
                            format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#).into_bytes(),
                        )
                    } else {
                        ("401 Unauthorized", vec![], b"{}".to_vec())
                    }
                } else if auth != bearer {
                    ("401 Unauthorized", vec![("WWW-Authenticate".into(), challenge)], br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec())
                } else if path == "/v2/acme/image/manifests/v1"
                    || path == format!("/v2/acme/image/manifests/{}", served.manifest_digest)
                {
                    (
                        "200 OK",
                        vec![
                            (
                                "Content-Type".into(),
                                "application/vnd.oci.image.manifest.v1+json".into(),
                            ),
                            (
                                "Docker-Content-Digest".into(),
                                served.manifest_digest.clone(),
                            ),
                        ],
                        served.manifest.clone(),
                    )
                } else if path == format!("/v2/acme/image/blobs/{}", served.config_digest) {
                    (
                        "200 OK",
                        vec![("Docker-Content-Digest".into(), served.config_digest.clone())],
                        served.config.clone(),
                    )
                } else {
                    (
                        "404 Not Found",
                        vec![],
                        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                            .to_vec(),
                    )
                };
                let mut resp = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                w.write_all(resp.as_bytes()).await.unwrap();
                w.write_all(&body).await.unwrap();
            }
        });
    }
}

#[tokio::test]
async fn bearer_token_flow_with_basic_credentials() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(content());
    let log = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(serve(listener, served.clone(), log.clone()));
    let image: ImageRef = format!("{addr}/acme/image:v1").parse().unwrap();

    // Without credentials the token endpoint refuses: a clear 401.
    let anon = RegistryOptions {
        tls_verify: false,
        ..Default::default()
    };
    let err = format!("{:#}", registry::resolve(&image, &anon).await.unwrap_err());
    assert!(
        err.contains("401") || err.contains("authentication"),
        "{err}"
    );
    assert!(!err.contains(PASS));

    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    let mut f = AuthFile::default();
    f.set(&addr.to_string(), &Credentials::basic(USER, PASS));
    f.write(&authfile).unwrap();
    let opts = RegistryOptions {
        tls_verify: false,
        auth: AuthStore::from_file(&authfile).unwrap(),
        ..Default::default()
    };
    log.lock().unwrap().clear();
    let r = registry::resolve(&image, &opts).await.unwrap();
    assert_eq!(r.manifest_digest.to_string(), served.manifest_digest);
    assert_eq!(r.config.label("ostree.bootable"), Some("true"));
    let log = log.lock().unwrap().clone();
    // The exchange: challenge, token with Basic credentials, then Bearer on the API.
    assert!(
        log.iter()
            .any(|l| l.starts_with("/token?") && l.contains("[Basic ")),
        "{log:?}"
    );
    let api: Vec<&String> = log.iter().filter(|l| l.starts_with("/v2/acme/")).collect();
    assert!(
        !api.is_empty()
            && api
                .iter()
                .all(|l| l.ends_with(&format!("[Bearer {TOKEN}]"))),
        "{log:?}"
    );
}
