//! `herdguard purge`: asks a sidecar's admin listener to purge URLs
//! (`POST /purge`, one request per URL), fleet-wide when it shares a Redis.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `herdguard purge` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct PurgeArgs {
    /// The sidecar's admin listener, e.g. http://127.0.0.1:9090 (or 127.0.0.1:9090).
    #[arg(long, env = "HERDGUARD_PURGE_ADMIN")]
    pub admin: String,
    /// The sidecar's purge token (its --purge-token).
    #[arg(long, env = "HERDGUARD_PURGE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// URLs to purge: http(s)://host/path?query as clients request them, or a
    /// path on the origin's host.
    #[arg(required_unless_present = "tags")]
    pub urls: Vec<String>,
    /// Surrogate keys to purge (the origin's `Surrogate-Key` / `Cache-Tag`):
    /// every stored answer carrying one; repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

/// Why a purge did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// The admin address is not an http:// URL or host:port (exit code 2).
    #[error("--admin {0:?}: need an http://host:port URL")]
    Admin(String),
    /// The sidecar could not be reached.
    #[error("{url}: admin listener unreachable: {reason}")]
    Unreachable {
        /// The URL being purged.
        url: String,
        /// Why.
        reason: String,
    },
    /// The sidecar refused (its answer's first line).
    #[error("{url}: {status}: {text}")]
    Refused {
        /// The URL being purged.
        url: String,
        /// The status.
        status: StatusCode,
        /// The first line of the answer.
        text: String,
    },
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

impl PurgeError {
    /// The process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            PurgeError::Admin(_) => 2,
            _ => 1,
        }
    }
}

/// Purges every URL, then every tag, in turn, printing one line each (how
/// many stored keys the sidecar removed; "nothing stored" when none); stops at
/// the first refusal.
pub fn purge_blocking(args: PurgeArgs) -> Result<(), PurgeError> {
    let admin = admin_uri(&args.admin)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PurgeError::Runtime)?;
    runtime.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let urls = args.urls.iter().map(|u| ("url", u));
        for (field, subject) in urls.chain(args.tags.iter().map(|t| ("tag", t))) {
            let answer = purge_one(&client, &admin, &args.token, (field, subject)).await?;
            let subject = match field {
                "tag" => format!("tag {subject}"),
                _ => subject.clone(),
            };
            println!("{}", summary(&subject, &answer));
        }
        Ok(())
    })
}

/// One line for the answer to a purge of `subject`: `purged …` only when the
/// sidecar found something stored.
fn summary(subject: &str, answer: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(answer).unwrap_or_default();
    let fleet = json["fleet"].as_str().unwrap_or("none");
    match json["keys"].as_u64() {
        Some(0) => {
            format!("nothing stored for {subject} on this instance (keys: 0; fleet: {fleet})")
        }
        Some(n) => {
            format!("purged {subject}: {n} stored on this instance (keys: {n}; fleet: {fleet})")
        }
        None => format!("{subject}: {answer}"),
    }
}

fn admin_uri(admin: &str) -> Result<Uri, PurgeError> {
    let with_scheme = if admin.contains("://") {
        admin.to_string()
    } else {
        format!("http://{admin}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|_| PurgeError::Admin(admin.to_string()))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => format!("http://{a}/purge")
            .parse()
            .map_err(|_| PurgeError::Admin(admin.to_string())),
        _ => Err(PurgeError::Admin(admin.to_string())),
    }
}

async fn purge_one<C>(
    client: &Client<C, Full<Bytes>>,
    admin: &Uri,
    token: &str,
    (field, url): (&str, &str),
) -> Result<String, PurgeError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let unreachable = |reason: String| PurgeError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let body = serde_json::json!({ field: url }).to_string();
    let request = Request::post(admin.clone())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| unreachable(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(10), async {
        let response = client
            .request(request)
            .await
            .map_err(|e| crate::origin::error_chain(&e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    })
    .await
    .map_err(|_| unreachable("no answer within 10 s".into()))?;
    let (status, body) = response.map_err(unreachable)?;
    let text = String::from_utf8_lossy(&body);
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if status.is_success() {
        Ok(first)
    } else {
        Err(PurgeError::Refused {
            url: url.to_string(),
            status,
            text: first.trim_start_matches("herdguard: ").to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_that_found_nothing_never_says_purged() {
        let line = summary(
            "/a",
            r#"{"fleet":"broadcast","key":"/a","keys":0,"url":"/a"}"#,
        );
        assert_eq!(
            line,
            "nothing stored for /a on this instance (keys: 0; fleet: broadcast)"
        );
        let line = summary("tag t", r#"{"fleet":"none","keys":2,"tag":"t"}"#);
        assert_eq!(
            line,
            "purged tag t: 2 stored on this instance (keys: 2; fleet: none)"
        );
        assert_eq!(summary("/a", "odd"), "/a: odd");
    }

    #[test]
    fn admin_addresses() {
        assert_eq!(
            admin_uri("127.0.0.1:9090").unwrap().to_string(),
            "http://127.0.0.1:9090/purge"
        );
        assert_eq!(
            admin_uri("http://127.0.0.1:9090/").unwrap().to_string(),
            "http://127.0.0.1:9090/purge"
        );
        for bad in ["https://x:1", "", "ftp://x", "http://"] {
            assert_eq!(admin_uri(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }
}
