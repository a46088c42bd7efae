//! The `http`, `aws` and `sql` blocks, gathered from span attributes before anything is written.

use std::net::IpAddr;

use crate::proto::{AnyValue, KeyValue, Span, any_value::Value};

use super::attrs::{Key, Known, int_of, str_of};
use crate::model::SpanKind;

#[derive(Clone, Copy)]
/// A port as sent: string or integer (both occur in the wild).
pub(super) enum Port<'a> {
    Text(&'a str),
    Number(i64),
}

pub(super) fn port_of(v: &AnyValue) -> Option<Port<'_>> {
    match &v.value {
        Some(Value::StringValue(s)) => Some(Port::Text(s)),
        Some(Value::IntValue(i)) => Some(Port::Number(*i)),
        _ => None,
    }
}

pub(super) struct Url<'a> {
    pub(super) full: Option<&'a str>,
    pub(super) scheme: &'a str,
    pub(super) host: &'a str,
    pub(super) port: Option<Port<'a>>,
    /// `http.target`, or `url.path` (default `/`) plus the query.
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
}

/// The `http` block (Collector http.go), old and new HTTP semantic conventions.
pub(super) struct Http<'a> {
    pub(super) method: Option<&'a str>,
    pub(super) client_ip: Option<&'a str>,
    pub(super) x_forwarded_for: bool,
    pub(super) user_agent: Option<&'a str>,
    pub(super) status: Option<i64>,
    pub(super) url: Option<Url<'a>>,
    pub(super) content_length: i64,
}

/// Go's `net.ParseIP` test, which the Collector applies to the newer address attributes.
pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

impl<'a> Http<'a> {
    /// `None` unless one of the attributes that make an HTTP span is present (Collector `hasHTTP`);
    /// the client IP prefers `client.address`, then `http.client_ip`, then the peer address.
    pub(super) fn new(k: &Known<'a>, kind: SpanKind, span: &'a Span) -> Option<Self> {
        use Key::*;
        let has_http = [
            HttpMethod,
            HttpRequestMethod,
            HttpClientIp,
            HttpUserAgent,
            UserAgentOriginal,
            HttpStatusCode,
            HttpResponseStatusCode,
            HttpUrl,
            UrlFull,
            HttpScheme,
            UrlScheme,
            HttpHost,
            HttpTarget,
            HttpServerName,
            NetHostPort,
            UrlPath,
            UrlQuery,
        ]
        .iter()
        .any(|key| k.has(*key));
        if !has_http {
            return None;
        }
        let peer_address = k.str(NetworkPeerAddress).filter(|a| is_ip(a));
        let has_peer_addr = k.has(NetPeerIp) || peer_address.is_some();
        let client_ip = k
            .str(ClientAddress)
            .filter(|a| is_ip(a))
            .or_else(|| k.str(HttpClientIp))
            .or_else(|| k.str(NetPeerIp))
            .or(peer_address)
            .filter(|s| !s.is_empty());
        let has_url = [
            HttpUrl,
            UrlFull,
            HttpHost,
            HttpServerName,
            HostName,
            NetHostName,
            NetPeerName,
            NetPeerIp,
            ServerAddress,
        ]
        .iter()
        .any(|key| k.has(*key))
            || peer_address.is_some();
        let url = has_url.then(|| Url::new(k, kind));
        Some(Http {
            method: k.str(HttpMethod).or_else(|| k.str(HttpRequestMethod)),
            x_forwarded_for: client_ip.is_some() && !has_peer_addr,
            client_ip,
            user_agent: k.str(HttpUserAgent).or_else(|| k.str(UserAgentOriginal)),
            status: status_code(k),
            url,
            content_length: response_size(&span.attributes)
                .or_else(|| {
                    span.events
                        .iter()
                        .find_map(|e| response_size(&e.attributes))
                })
                .unwrap_or(0),
        })
    }
}

impl<'a> Url<'a> {
    /// SERVER spans name their own host (`http.host`, `http.server_name`, `net.host.name`,
    /// `host.name`, `server.address`); other kinds the peer (`http.host`, `net.peer.name`, `net.peer.ip`).
    pub(super) fn new(k: &Known<'a>, kind: SpanKind) -> Self {
        use Key::*;
        let full = k.str(HttpUrl).or_else(|| k.str(UrlFull));
        let scheme = k
            .str(HttpScheme)
            .or_else(|| k.str(UrlScheme))
            .unwrap_or("http");
        let (host, port) = match k.str(HttpHost) {
            Some(host) => (host, None),
            None if kind == SpanKind::Server => (
                k.str(HttpServerName)
                    .or_else(|| k.str(NetHostName))
                    .or_else(|| k.str(HostName))
                    .or_else(|| k.str(ServerAddress))
                    .unwrap_or(""),
                k.get(NetHostPort)
                    .or_else(|| k.get(ServerPort))
                    .and_then(port_of),
            ),
            None => match k.str(NetPeerName).or_else(|| k.str(NetPeerIp)) {
                Some(host) => (host, k.get(NetPeerPort).and_then(port_of)),
                // Deviation: the Collector ignores server.address on client spans and writes
                // "http:///…"; new-convention clients without url.full name their server here.
                None => (
                    k.str(ServerAddress).unwrap_or(""),
                    k.get(ServerPort).and_then(port_of),
                ),
            },
        };
        let (path, query) = match k.str(HttpTarget) {
            Some(target) => (target, None),
            None => (k.str(UrlPath).unwrap_or("/"), k.str(UrlQuery)),
        };
        Url {
            full,
            scheme,
            host,
            port,
            path,
            query,
        }
    }
}

/// The HTTP response status, old name first.
pub(super) fn status_code(k: &Known<'_>) -> Option<i64> {
    k.get(Key::HttpStatusCode)
        .or_else(|| k.get(Key::HttpResponseStatusCode))
        .and_then(int_of)
}

/// Collector `extractResponseSizeFromAttributes`: a RECEIVED message's payload size.
pub(super) fn response_size(attrs: &[KeyValue]) -> Option<i64> {
    let mut received = false;
    let mut size = None;
    for kv in attrs {
        match kv.key.as_str() {
            "message.type" => received = kv.value.as_ref().and_then(str_of) == Some("RECEIVED"),
            "messaging.message_payload_size_bytes" => size = kv.value.as_ref().and_then(int_of),
            _ => {}
        }
    }
    size.filter(|s| received && *s != 0)
}

/// `table_name` (one table) or `table_names` (several).
pub(super) enum Tables<'a> {
    None,
    One(&'a str),
    Many(&'a [AnyValue]),
}

/// The span part of the `aws` block (Collector aws.go).
pub(super) struct AwsSpan<'a> {
    pub(super) operation: Option<&'a str>,
    pub(super) account: Option<&'a str>,
    pub(super) region: Option<&'a str>,
    pub(super) request_id: Option<&'a str>,
    pub(super) queue_url: Option<&'a str>,
    pub(super) tables: Tables<'a>,
}

impl<'a> AwsSpan<'a> {
    /// The operation is `aws.operation`, else `rpc.method` (for every RPC span, as in the Collector).
    pub(super) fn new(k: &Known<'a>) -> Self {
        use Key::*;
        let mut tables = match k.str(AwsTableName).or_else(|| k.str(AwsTableName2)) {
            Some(t) => Tables::One(t),
            None => Tables::None,
        };
        // The semantic-convention attributes win over the X-Ray SDK ones.
        match k.get(DynamoDbTableNames).and_then(|v| v.value.as_ref()) {
            Some(Value::ArrayValue(a)) if a.values.len() == 1 => {
                tables = Tables::One(str_of(&a.values[0]).unwrap_or(""));
            }
            Some(Value::ArrayValue(a)) if a.values.len() > 1 => tables = Tables::Many(&a.values),
            Some(Value::StringValue(s)) => tables = Tables::One(s),
            _ => {}
        }
        AwsSpan {
            operation: match k.get(AwsOperation) {
                Some(v) => str_of(v),
                None => k.str(RpcMethod),
            },
            account: k.str(AwsAccountId),
            region: k.str(AwsRegion),
            request_id: k.str(AwsRequestId).or_else(|| k.str(AwsRequestId2)),
            queue_url: k
                .str(MessagingUrl)
                .or_else(|| k.str(AwsQueueUrl))
                .or_else(|| k.str(AwsQueueUrl2)),
            tables,
        }
    }
}

/// The `sql` block (Collector sql.go); only for SQL database systems.
pub(super) struct Sql<'a> {
    pub(super) url: &'a str,
    pub(super) connection: &'a str,
    pub(super) database: &'a str,
    pub(super) database_type: &'a str,
    pub(super) user: Option<&'a str>,
    pub(super) query: Option<&'a str>,
}

impl<'a> Sql<'a> {
    pub(super) fn new(k: &Known<'a>, span: &'a Span) -> Option<Self> {
        use Key::*;
        // Deviation: the newer names (db.system.name, db.namespace, db.query.text) count too.
        let system = k.str(DbSystem).or_else(|| k.str(DbSystemName))?;
        let is_sql = matches!(
            system,
            "db2"
                | "derby"
                | "hive"
                | "mariadb"
                | "mssql"
                | "mysql"
                | "oracle"
                | "postgresql"
                | "sqlite"
                | "teradata"
                | "other_sql"
        );
        is_sql.then(|| Sql {
            // Collector: the span name is a more useful URL than the connection string.
            url: &span.name,
            connection: k.text(DbConnectionString).unwrap_or("localhost"),
            database: k.str(DbName).or_else(|| k.str(DbNamespace)).unwrap_or(""),
            database_type: system,
            user: k.str(DbUser),
            query: k.str(DbStatement).or_else(|| k.str(DbQueryText)),
        })
    }
}

/// The host of a URL-like string (`scheme://user@host:port/…` or `//host…`), as Go's
/// `url.Parse(..).Hostname()` finds it; `None` when there is no authority part.
pub(super) fn url_host(s: &str) -> Option<&str> {
    let after = match s.find("://") {
        Some(i)
            if i > 0
                && s[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            &s[i + 3..]
        }
        _ => s.strip_prefix("//")?,
    };
    let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => hostport.split_once(':').map_or(hostport, |(h, _)| h),
    };
    (!host.is_empty()).then_some(host)
}
