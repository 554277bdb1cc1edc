//! The origin client: pooled keep-alive connections, timeouts, body limits, and
//! an error for each way the origin can fail.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why the origin gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// No complete answer within the origin timeout.
    #[error("origin did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or was reset, or the answer was not valid HTTP.
    #[error("origin unreachable or sent an invalid response: {0}")]
    Failed(String),
    /// The body is larger than the configured limit.
    #[error("origin response body exceeds {0} bytes")]
    TooLarge(usize),
    /// The origin answered with a server error (500, 502, 503, 504): the answer is
    /// forwarded unless a stale response may stand in (RFC 5861 stale-if-error).
    #[error("origin answered {}", .0.status)]
    ServerError(Box<Fetched>),
}

impl OriginError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OriginError::Timeout(_) => "timeout",
            OriginError::Failed(_) => "failed",
            OriginError::TooLarge(_) => "too_large",
            OriginError::ServerError(_) => "server_error",
        }
    }
}

/// A complete origin answer.
#[derive(Debug)]
pub struct Fetched {
    /// Status code.
    pub status: StatusCode,
    /// End-to-end header fields.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When the request was sent.
    pub request_time: SystemTime,
    /// When the answer arrived.
    pub response_time: SystemTime,
}

/// Client of one origin.
#[derive(Clone)]
pub struct Origin {
    client: Client<HttpConnector, Full<Bytes>>,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    timeout: Duration,
    max_body: usize,
}

impl Origin {
    /// A client of `base` (an `http://host:port[/prefix]` URL).
    pub fn new(
        base: &Uri,
        connect_timeout: Duration,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Self, String> {
        let scheme = base
            .scheme()
            .cloned()
            .ok_or("the URL needs a scheme (http://)")?;
        if scheme != Scheme::HTTP {
            return Err("only http:// origins are supported".into());
        }
        let authority = base.authority().cloned().ok_or("the URL needs a host")?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Origin {
            client,
            scheme,
            authority,
            base_path: base.path().trim_end_matches('/').to_string(),
            timeout,
            max_body: max_body.max(1),
        })
    }

    /// Sends `method path_and_query` with `headers` (hop-by-hop fields removed) and
    /// `body`, and reads the whole answer within the origin timeout.
    pub async fn fetch(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Fetched, OriginError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, path_and_query))
            .build()
            .map_err(|e| OriginError::Failed(format!("bad target URI: {e}")))?;
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(h) = request.headers_mut() {
            *h = end_to_end(headers);
            h.remove(header::HOST);
            if let Ok(host) = self.authority.as_str().parse() {
                h.insert(header::HOST, host);
            }
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| OriginError::Failed(format!("bad request: {e}")))?;
        let request_time = SystemTime::now();
        let exchange = async {
            let response: Response<hyper::body::Incoming> = self
                .client
                .request(request)
                .await
                .map_err(|e| OriginError::Failed(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        OriginError::TooLarge(self.max_body)
                    } else {
                        OriginError::Failed(format!("reading the body: {e}"))
                    }
                })?;
            Ok::<_, OriginError>((parts, body.to_bytes()))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| OriginError::Timeout(self.timeout))??;
        Ok(Fetched {
            status: parts.status,
            headers: end_to_end(&parts.headers),
            body,
            request_time,
            response_time: SystemTime::now(),
        })
    }
}

/// The error and its causes on one line (hyper's top-level message alone is vague).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `headers` without the hop-by-hop fields (RFC 9110 §7.6.1), including those
/// the `Connection` field names.
pub fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let mut out = headers.clone();
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ]
    .iter()
    .chain(named.iter())
    {
        out.remove(name);
    }
    out
}
