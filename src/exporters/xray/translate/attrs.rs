//! Span and resource attributes the translator reads: key classification and first-value lookup.

use crate::proto::{AnyValue, KeyValue, Resource, any_value::Value};

use super::RESOURCE_PREFIX;

/// Span attributes the translation reads, by the block that consumes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Key {
    Other,
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
    HostName,
    NetHostName,
    NetPeerName,
    NetPeerPort,
    NetPeerIp,
    NetworkPeerAddress,
    ClientAddress,
    UrlPath,
    UrlQuery,
    ServerAddress,
    ServerPort,
    HttpStatusText,
    AwsOperation,
    RpcMethod,
    AwsAccountId,
    AwsRegion,
    AwsRequestId,
    AwsRequestId2,
    AwsQueueUrl,
    AwsQueueUrl2,
    AwsTableName,
    AwsTableName2,
    MessagingUrl,
    DynamoDbTableNames,
    DbConnectionString,
    DbSystem,
    DbSystemName,
    DbName,
    DbNamespace,
    DbStatement,
    DbQueryText,
    DbUser,
    AwsLocalService,
    AwsRemoteService,
    AwsRemoteOperation,
    RemoteTarget,
    K8sRemoteNamespace,
    AwsSpanKind,
    PeerService,
    AwsService,
    RpcSystem,
    RpcService,
    XrayInProgress,
    XrayAnnotations,
    EnduserId,
    PayloadSize,
    MessageType,
    Count,
}

pub(super) const KEY_COUNT: usize = Key::Count as usize;

#[derive(Clone, Copy, PartialEq, Eq)]
/// A block of the document that, when written, uses up the attributes it was made from.
pub(super) enum Block {
    None,
    Http,
    Aws,
    Sql,
    StatusText,
    InProgress,
}

impl Key {
    /// Classifies an attribute key; everything the translation does not read is `Other`.
    pub(super) fn of(key: &str) -> Key {
        match key {
            "http.method" => Key::HttpMethod,
            "http.request.method" => Key::HttpRequestMethod,
            "http.client_ip" => Key::HttpClientIp,
            "http.user_agent" => Key::HttpUserAgent,
            "user_agent.original" => Key::UserAgentOriginal,
            "http.status_code" => Key::HttpStatusCode,
            "http.response.status_code" => Key::HttpResponseStatusCode,
            "http.url" => Key::HttpUrl,
            "url.full" => Key::UrlFull,
            "http.scheme" => Key::HttpScheme,
            "url.scheme" => Key::UrlScheme,
            "http.host" => Key::HttpHost,
            "http.target" => Key::HttpTarget,
            "http.server_name" => Key::HttpServerName,
            "net.host.port" => Key::NetHostPort,
            "host.name" => Key::HostName,
            "net.host.name" => Key::NetHostName,
            "net.peer.name" => Key::NetPeerName,
            "net.peer.port" => Key::NetPeerPort,
            "net.peer.ip" => Key::NetPeerIp,
            "network.peer.address" => Key::NetworkPeerAddress,
            "client.address" => Key::ClientAddress,
            "url.path" => Key::UrlPath,
            "url.query" => Key::UrlQuery,
            "server.address" => Key::ServerAddress,
            "server.port" => Key::ServerPort,
            "http.status_text" => Key::HttpStatusText,
            "aws.operation" => Key::AwsOperation,
            "rpc.method" => Key::RpcMethod,
            "aws.account_id" => Key::AwsAccountId,
            "aws.region" => Key::AwsRegion,
            "aws.request_id" => Key::AwsRequestId,
            "aws.requestId" => Key::AwsRequestId2,
            "aws.queue_url" => Key::AwsQueueUrl,
            "aws.queue.url" => Key::AwsQueueUrl2,
            "aws.table_name" => Key::AwsTableName,
            "aws.table.name" => Key::AwsTableName2,
            "messaging.url" => Key::MessagingUrl,
            "aws.dynamodb.table_names" => Key::DynamoDbTableNames,
            "db.connection_string" => Key::DbConnectionString,
            "db.system" => Key::DbSystem,
            "db.system.name" => Key::DbSystemName,
            "db.name" => Key::DbName,
            "db.namespace" => Key::DbNamespace,
            "db.statement" => Key::DbStatement,
            "db.query.text" => Key::DbQueryText,
            "db.user" => Key::DbUser,
            "aws.local.service" => Key::AwsLocalService,
            "aws.remote.service" => Key::AwsRemoteService,
            "aws.remote.operation" => Key::AwsRemoteOperation,
            "remoteTarget" => Key::RemoteTarget,
            "K8s.RemoteNamespace" => Key::K8sRemoteNamespace,
            "aws.span.kind" => Key::AwsSpanKind,
            "peer.service" => Key::PeerService,
            "aws.service" => Key::AwsService,
            "rpc.system" => Key::RpcSystem,
            "rpc.service" => Key::RpcService,
            "aws.xray.inprogress" => Key::XrayInProgress,
            "aws.xray.annotations" => Key::XrayAnnotations,
            "enduser.id" => Key::EnduserId,
            "messaging.message_payload_size_bytes" => Key::PayloadSize,
            "message.type" => Key::MessageType,
            _ => Key::Other,
        }
    }

    /// The block whose presence removes this attribute from annotations and metadata.
    pub(super) fn block(self) -> Block {
        use Key::*;
        match self {
            HttpMethod
            | HttpRequestMethod
            | HttpClientIp
            | HttpUserAgent
            | UserAgentOriginal
            | HttpStatusCode
            | HttpResponseStatusCode
            | HttpUrl
            | UrlFull
            | HttpScheme
            | UrlScheme
            | HttpHost
            | HttpTarget
            | HttpServerName
            | NetHostPort
            | HostName
            | NetHostName
            | NetPeerName
            | NetPeerPort
            | NetPeerIp
            | NetworkPeerAddress
            | ClientAddress
            | UrlPath
            | UrlQuery
            | ServerAddress
            | ServerPort => Block::Http,
            AwsOperation | RpcMethod | AwsAccountId | AwsRegion | AwsRequestId | AwsRequestId2
            | AwsQueueUrl | AwsQueueUrl2 | AwsTableName | AwsTableName2 => Block::Aws,
            DbConnectionString | DbSystem | DbSystemName | DbName | DbNamespace | DbStatement
            | DbQueryText | DbUser => Block::Sql,
            HttpStatusText => Block::StatusText,
            XrayInProgress => Block::InProgress,
            _ => Block::None,
        }
    }
}

/// A string attribute value (`Str()` in the Collector, without its conversions).
pub(super) fn str_of(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// An integer attribute. Deviation: numeric strings count too (the Collector reads them as 0).
pub(super) fn int_of(v: &AnyValue) -> Option<i64> {
    match &v.value {
        Some(Value::IntValue(i)) => Some(*i),
        Some(Value::StringValue(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether a value can be an annotation: string, number or boolean (Collector `annotationValue`).
pub(super) fn is_scalar(v: &AnyValue) -> bool {
    matches!(
        v.value,
        Some(
            Value::StringValue(_)
                | Value::IntValue(_)
                | Value::DoubleValue(_)
                | Value::BoolValue(_)
        )
    )
}

/// Whether an indexed key `listed` names the resource attribute `key` as `otel.resource.<key>`.
pub(super) fn is_resource_key(listed: &str, key: &str) -> bool {
    listed.len() == RESOURCE_PREFIX.len() + key.len()
        && listed.starts_with(RESOURCE_PREFIX)
        && listed.ends_with(key)
}

/// The first value of each attribute the translation reads.
pub(super) struct Known<'a> {
    pub(super) values: [Option<&'a AnyValue>; KEY_COUNT],
    /// `Key` of each span attribute, in order.
    pub(super) keys: Vec<Key>,
}

impl<'a> Known<'a> {
    /// One pass over the attributes; the first occurrence of a key wins, as pdata's `Get` does.
    pub(super) fn new(attrs: &'a [KeyValue]) -> Self {
        let mut values = [None; KEY_COUNT];
        let mut keys = Vec::with_capacity(attrs.len());
        for kv in attrs {
            let k = Key::of(&kv.key);
            keys.push(k);
            if k != Key::Other && values[k as usize].is_none() {
                values[k as usize] = kv.value.as_ref().filter(|v| v.value.is_some());
            }
        }
        Known { values, keys }
    }

    /// A present, non-empty value.
    pub(super) fn get(&self, k: Key) -> Option<&'a AnyValue> {
        self.values[k as usize]
    }

    pub(super) fn has(&self, k: Key) -> bool {
        self.values[k as usize].is_some()
    }

    pub(super) fn str(&self, k: Key) -> Option<&'a str> {
        self.get(k).and_then(str_of)
    }

    /// A non-empty string (an empty one counts as absent where the Collector tests `== ""`).
    pub(super) fn text(&self, k: Key) -> Option<&'a str> {
        self.str(k).filter(|s| !s.is_empty())
    }

    /// The first key of `keys` with a non-empty string value.
    pub(super) fn first_text(&self, keys: &[Key]) -> Option<&'a str> {
        keys.iter().find_map(|k| self.text(*k))
    }
}

/// The resource attributes the translation reads.
#[derive(Default)]
pub(super) struct Res<'a> {
    pub(super) attrs: &'a [KeyValue],
    pub(super) provider: Option<&'a str>,
    pub(super) platform: Option<&'a str>,
    pub(super) account: Option<&'a str>,
    pub(super) zone: Option<&'a str>,
    pub(super) host_id: Option<&'a str>,
    pub(super) host_type: Option<&'a str>,
    pub(super) ami_id: Option<&'a str>,
    pub(super) container: Option<&'a str>,
    pub(super) pod: Option<&'a str>,
    pub(super) namespace: Option<&'a str>,
    pub(super) instance_id: Option<&'a str>,
    pub(super) version: Option<&'a str>,
    pub(super) image_tag: Option<&'a str>,
    pub(super) sdk_name: Option<&'a str>,
    pub(super) sdk_language: Option<&'a str>,
    pub(super) sdk_version: Option<&'a str>,
    pub(super) auto_version: Option<&'a str>,
    pub(super) container_id: Option<&'a str>,
    pub(super) cluster_name: Option<&'a str>,
    pub(super) cluster_arn: Option<&'a str>,
    pub(super) container_arn: Option<&'a str>,
    pub(super) task_arn: Option<&'a str>,
    pub(super) task_family: Option<&'a str>,
    pub(super) launch_type: Option<&'a str>,
    pub(super) log_groups: Option<&'a AnyValue>,
    pub(super) log_group_arns: Option<&'a AnyValue>,
    pub(super) service_name: Option<&'a str>,
}

impl<'a> Res<'a> {
    /// One pass over the resource attributes (the first occurrence of a key wins).
    pub(super) fn new(resource: &'a Resource) -> Self {
        let mut r = Res {
            attrs: &resource.attributes,
            ..Res::default()
        };
        for kv in &resource.attributes {
            let Some(v) = kv.value.as_ref() else { continue };
            let s = str_of(v);
            let slot = match kv.key.as_str() {
                "cloud.provider" => &mut r.provider,
                "cloud.platform" => &mut r.platform,
                "cloud.account.id" => &mut r.account,
                "cloud.availability_zone" => &mut r.zone,
                "host.id" => &mut r.host_id,
                "host.type" => &mut r.host_type,
                "host.image.id" => &mut r.ami_id,
                "container.name" => &mut r.container,
                "k8s.pod.name" => &mut r.pod,
                "service.namespace" => &mut r.namespace,
                "service.instance.id" => &mut r.instance_id,
                "service.version" => &mut r.version,
                "container.image.tag" => &mut r.image_tag,
                "telemetry.sdk.name" => &mut r.sdk_name,
                "telemetry.sdk.language" => &mut r.sdk_language,
                "telemetry.sdk.version" => &mut r.sdk_version,
                "telemetry.auto.version" | "telemetry.distro.version" => &mut r.auto_version,
                "container.id" => &mut r.container_id,
                "k8s.cluster.name" => &mut r.cluster_name,
                "aws.ecs.cluster.arn" => &mut r.cluster_arn,
                "aws.ecs.container.arn" => &mut r.container_arn,
                "aws.ecs.task.arn" => &mut r.task_arn,
                "aws.ecs.task.family" => &mut r.task_family,
                "aws.ecs.launchtype" => &mut r.launch_type,
                "service.name" => &mut r.service_name,
                "aws.log.group.names" => {
                    r.log_groups.get_or_insert(v);
                    continue;
                }
                "aws.log.group.arns" => {
                    r.log_group_arns.get_or_insert(v);
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = s;
            }
        }
        r
    }

    /// Collector: a resource whose `cloud.provider` is set and is not `aws` gets no AWS data.
    pub(super) fn is_other_cloud(&self) -> bool {
        self.provider.is_some_and(|p| p != "aws")
    }

    /// Collector `determineAwsOrigin`.
    pub(super) fn origin(&self) -> Option<&'static str> {
        crate::model::aws_origin(
            !self.attrs.is_empty(),
            self.provider,
            self.platform,
            self.launch_type,
        )
    }
}
