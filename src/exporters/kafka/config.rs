//! The `kafka.*` keys: the producer settings of the OpenTelemetry Collector's `kafka` exporter
//! (topic `otlp_spans`, encoding `otlp_proto`, one message per trace keyed by its trace ID), and
//! the security settings MSK and other brokers ask for.

use std::time::Duration;

use crate::config::parse::toml_string;
use crate::config::{Key, Section};

/// The Collector's default topic for spans.
pub const DEFAULT_TOPIC: &str = "otlp_spans";
/// The Collector's (and Kafka's) default largest message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Which acknowledgement a message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Every in-sync replica (`-1`): the Collector's default, and what "sent" should mean.
    All,
    Leader,
    None,
}

/// The producer's compression codec (librdkafka `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// SASL, as Kafka names the mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
    /// Amazon MSK's IAM access control: OAUTHBEARER with a SigV4-signed token.
    AwsMskIam,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::AwsMskIam => "AWS_MSK_IAM_OAUTHBEARER",
        }
    }
}

/// Settings of the Kafka exporter.
#[derive(Clone, PartialEq)]
pub struct KafkaConfig {
    /// `host:port` of one or more brokers to bootstrap from.
    pub brokers: Vec<String>,
    pub topic: String,
    pub client_id: String,
    pub required_acks: Acks,
    pub compression: Compression,
    pub max_message_bytes: usize,
    /// How long the producer waits to fill a batch (librdkafka `linger.ms`).
    pub linger: Duration,
    /// Largest produce batch per partition, in bytes (librdkafka `batch.size`).
    pub batch_bytes: usize,
    /// One message per trace, keyed by its trace ID in lowercase hex (the Collector's
    /// `partition_traces_by_id`): a trace then goes to one partition, so to one consumer.
    pub partition_traces_by_id: bool,
    /// What the producer may hold unacknowledged (librdkafka's queue; its own default is 1 GB).
    pub max_buffered_bytes: usize,
    /// How long one message may keep being retried before its spans are dropped and counted.
    pub retry_max_elapsed: Duration,
    pub tls: bool,
    /// PEM files: CAs to trust (else the system's), and a client certificate and key.
    pub tls_ca: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: String,
    pub sasl_password: String,
    /// Also consume spans from `topics` as a member of `group_id` (the gateway side).
    pub receive: bool,
    pub group_id: String,
    pub topics: Vec<String>,
    /// Where a group with no committed offset starts: the newest messages (false) or the oldest.
    pub from_earliest: bool,
    /// A member silent this long leaves the group, and its partitions move (the Collector's 10 s).
    pub session_timeout: Duration,
}

// By hand: the SASL password never reaches a log line through `{:?}`.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("compression", &self.compression)
            .field("tls", &self.tls)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .finish_non_exhaustive()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["localhost:9092".into()],
            topic: DEFAULT_TOPIC.into(),
            client_id: "sidetrace".into(),
            required_acks: Acks::All,
            compression: Compression::None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            linger: Duration::from_millis(5),
            batch_bytes: 1_000_000,
            partition_traces_by_id: true,
            max_buffered_bytes: 16 * 1024 * 1024,
            retry_max_elapsed: Duration::from_secs(300),
            tls: false,
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            sasl_mechanism: None,
            sasl_username: String::new(),
            sasl_password: String::new(),
            receive: false,
            group_id: "sidetrace".into(),
            topics: vec![DEFAULT_TOPIC.into()],
            from_earliest: false,
            session_timeout: Duration::from_secs(10),
        }
    }
}

type K = Key<KafkaConfig>;

impl Section for KafkaConfig {
    const KEYS: &'static [K] = &[
        K::list(
            "kafka.brokers",
            "Kafka: brokers to bootstrap from (host:port).",
            |c| &mut c.brokers,
        ),
        K::custom(
            "kafka.topic",
            "Kafka exporter: the topic spans are produced to.",
            |c, v| {
                if v.trim().is_empty() {
                    return Err("a topic name is needed".into());
                }
                c.topic = v.trim().to_owned();
                Ok(())
            },
            |c| toml_string(&c.topic),
        ),
        K::custom(
            "kafka.encoding",
            "Kafka exporter: the message encoding; otlp_proto (OTLP TracesData protobuf) only.",
            |_, v| match v.trim() {
                "otlp_proto" => Ok(()),
                other => Err(format!(
                    "{other:?}: only otlp_proto is supported (spans are spliced, never re-encoded)"
                )),
            },
            |_| toml_string("otlp_proto"),
        ),
        K::text(
            "kafka.client_id",
            "Kafka: the client ID brokers see.",
            |c| &mut c.client_id,
        ),
        K::custom(
            "kafka.required_acks",
            "Kafka exporter: all (every in-sync replica), 1 (the leader) or 0 (none).",
            |c, v| {
                c.required_acks = match v.trim() {
                    "all" | "-1" => Acks::All,
                    "1" => Acks::Leader,
                    "0" => Acks::None,
                    other => return Err(format!("{other:?} is not all, 1 or 0")),
                };
                Ok(())
            },
            |c| match c.required_acks {
                Acks::All => toml_string("all"),
                Acks::Leader => toml_string("1"),
                Acks::None => toml_string("0"),
            },
        ),
        K::custom(
            "kafka.compression",
            "Kafka exporter: none, gzip, snappy, lz4 or zstd.",
            |c, v| {
                c.compression = match v.trim() {
                    "none" | "" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "snappy" => Compression::Snappy,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    other => {
                        return Err(format!("{other:?} is not none, gzip, snappy, lz4 or zstd"));
                    }
                };
                Ok(())
            },
            |c| toml_string(c.compression.name()),
        ),
        K::count(
            "kafka.max_message_bytes",
            "Kafka exporter: the largest message; a larger trace is split over several (counted).",
            |c| &mut c.max_message_bytes,
        ),
        K::duration(
            "kafka.linger",
            "Kafka exporter: how long the producer waits to fill a batch.",
            |c| &mut c.linger,
        ),
        K::count(
            "kafka.batch_bytes",
            "Kafka exporter: the largest produce batch per partition.",
            |c| &mut c.batch_bytes,
        ),
        K::bool(
            "kafka.partition_traces_by_id",
            "Kafka exporter: one message per trace, keyed by its trace ID (so one partition and one consumer see it whole).",
            |c| &mut c.partition_traces_by_id,
        ),
        K::count(
            "kafka.max_buffered_bytes",
            "Kafka exporter: what the producer may hold unacknowledged before it pushes back.",
            |c| &mut c.max_buffered_bytes,
        ),
        K::duration(
            "kafka.retry_max_elapsed",
            "Kafka exporter: how long one message may keep being retried.",
            |c| &mut c.retry_max_elapsed,
        ),
        K::bool("kafka.tls", "Kafka: connect over TLS.", |c| &mut c.tls),
        K::text(
            "kafka.tls_ca",
            "Kafka: a PEM file of the CAs to trust instead of the system's.",
            |c| &mut c.tls_ca,
        ),
        K::text(
            "kafka.tls_cert",
            "Kafka: a PEM client certificate for mutual TLS; needs kafka.tls_key.",
            |c| &mut c.tls_cert,
        ),
        K::text(
            "kafka.tls_key",
            "Kafka: the PEM private key of kafka.tls_cert.",
            |c| &mut c.tls_key,
        ),
        K::custom(
            "kafka.sasl_mechanism",
            "Kafka: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM_OAUTHBEARER (Amazon MSK's IAM access control, with the AWS credentials and region the agent finds; TLS is implied) (empty: no SASL).",
            |c, v| {
                c.sasl_mechanism = match v.trim().to_ascii_uppercase().as_str() {
                    "" => None,
                    "PLAIN" => Some(SaslMechanism::Plain),
                    "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
                    "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
                    // The Collector's spelling, and its older one.
                    "AWS_MSK_IAM_OAUTHBEARER" | "AWS_MSK_IAM" => Some(SaslMechanism::AwsMskIam),
                    other => {
                        return Err(format!(
                            "{other:?} is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM_OAUTHBEARER"
                        ));
                    }
                };
                Ok(())
            },
            |c| toml_string(c.sasl_mechanism.map_or("", SaslMechanism::name)),
        ),
        K::text("kafka.sasl_username", "Kafka: the SASL user.", |c| {
            &mut c.sasl_username
        }),
        K::custom(
            "kafka.sasl_password",
            "Kafka: the SASL password (never logged; prefer SIDETRACE_KAFKA_SASL_PASSWORD).",
            |c, v| {
                c.sasl_password = v.to_owned();
                Ok(())
            },
            // `config default` and `config show` never print it.
            |c| {
                toml_string(if c.sasl_password.is_empty() {
                    ""
                } else {
                    "***"
                })
            },
        ),
        K::bool(
            "kafka.receive",
            "Kafka receiver: consume spans from kafka.topics as a member of kafka.group_id (a gateway).",
            |c| &mut c.receive,
        ),
        K::custom(
            "kafka.group_id",
            "Kafka receiver: the consumer group; its members share the topics' partitions.",
            |c, v| {
                if v.trim().is_empty() {
                    return Err("a group ID is needed".into());
                }
                c.group_id = v.trim().to_owned();
                Ok(())
            },
            |c| toml_string(&c.group_id),
        ),
        K::list(
            "kafka.topics",
            "Kafka receiver: the topics to consume.",
            |c| &mut c.topics,
        ),
        K::custom(
            "kafka.initial_offset",
            "Kafka receiver: where a group with no committed offset starts: latest or earliest.",
            |c, v| {
                c.from_earliest = match v.trim() {
                    "latest" => false,
                    "earliest" => true,
                    other => return Err(format!("{other:?} is not latest or earliest")),
                };
                Ok(())
            },
            |c| {
                toml_string(if c.from_earliest {
                    "earliest"
                } else {
                    "latest"
                })
            },
        ),
        K::duration(
            "kafka.session_timeout",
            "Kafka receiver: a member silent this long leaves the group and its partitions move.",
            |c| &mut c.session_timeout,
        ),
    ];
}

impl KafkaConfig {
    /// librdkafka's settings for a client of these brokers (security included).
    pub fn client_settings(&self) -> Vec<(&'static str, String)> {
        let mut s = vec![
            ("bootstrap.servers", self.brokers.join(",")),
            ("client.id", self.client_id.clone()),
        ];
        // MSK serves IAM only over TLS (port 9098).
        let tls = self.tls || self.sasl_mechanism == Some(SaslMechanism::AwsMskIam);
        let protocol = match (tls, self.sasl_mechanism.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        s.push(("security.protocol", protocol.into()));
        if !self.tls_ca.is_empty() {
            s.push(("ssl.ca.location", self.tls_ca.clone()));
        } else if tls {
            // OpenSSL is linked in statically, with Debian's paths; librdkafka's probe finds the
            // system's CA bundle wherever it is (the image keeps it in /etc/ssl/certs).
            s.push(("ssl.ca.location", "probe".into()));
        }
        if !self.tls_cert.is_empty() {
            s.push(("ssl.certificate.location", self.tls_cert.clone()));
        }
        if !self.tls_key.is_empty() {
            s.push(("ssl.key.location", self.tls_key.clone()));
        }
        match self.sasl_mechanism {
            // The token comes from the client context's callback (`msk_iam`).
            Some(SaslMechanism::AwsMskIam) => s.push(("sasl.mechanism", "OAUTHBEARER".into())),
            Some(m) => {
                s.push(("sasl.mechanism", m.name().into()));
                s.push(("sasl.username", self.sasl_username.clone()));
                s.push(("sasl.password", self.sasl_password.clone()));
            }
            None => {}
        }
        s
    }

    /// The consumer's settings: at-least-once (an offset is stored only once its message is in
    /// the pipeline, and committed from there), cooperative rebalancing, a bounded prefetch.
    pub fn consumer_settings(&self) -> Vec<(&'static str, String)> {
        let mut s = self.client_settings();
        s.extend([
            ("group.id", self.group_id.clone()),
            (
                "auto.offset.reset",
                if self.from_earliest {
                    "earliest"
                } else {
                    "latest"
                }
                .to_owned(),
            ),
            ("enable.auto.commit", "true".to_owned()),
            // The Collector's interval (librdkafka's is 5 s): what a killed gateway admitted and
            // had not committed yet is read again by the next owner, so this bounds duplicates.
            ("auto.commit.interval.ms", "1000".to_owned()),
            (
                "session.timeout.ms",
                self.session_timeout.as_millis().max(1000).to_string(),
            ),
            // The Collector's 3 s, or a third of a shorter session.
            (
                "heartbeat.interval.ms",
                (self.session_timeout.as_millis() / 3)
                    .clamp(100, 3000)
                    .to_string(),
            ),
            ("enable.auto.offset.store", "false".to_owned()),
            (
                "partition.assignment.strategy",
                "cooperative-sticky".to_owned(),
            ),
            // Prefetched, not yet admitted, all partitions together (librdkafka's default is 64 MB).
            ("queued.max.messages.kbytes", "2048".to_owned()),
            // Past that bound librdkafka postpones the next fetch by this (default 1 s, which
            // left a gateway idle most of the time: ~3 k messages/s at 12 % CPU).
            ("fetch.queue.backoff.ms", "10".to_owned()),
            // A fetch that found less than a message waits at most this long for more
            // (librdkafka's 500 ms left a gateway idle between small fetches).
            ("fetch.wait.max.ms", "50".to_owned()),
            // What one fetch may bring, per partition and in all: small, since librdkafka holds
            // what it fetched (and decompressed) until every message of it is consumed, in the C
            // heap where it stays resident (a gateway catching up kept ~35 MB with 4 MB and 50 MB,
            // librdkafka's defaults). A larger message still comes whole (KIP-74).
            ("fetch.message.max.bytes", "262144".to_owned()),
            ("fetch.max.bytes", "1048576".to_owned()),
        ]);
        s
    }

    /// The producer's settings: [`KafkaConfig::client_settings`] and the exporter's own.
    pub fn producer_settings(&self) -> Vec<(&'static str, String)> {
        let mut s = self.client_settings();
        let acks = match self.required_acks {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        };
        s.extend([
            ("acks", acks.to_owned()),
            ("compression.type", self.compression.name().to_owned()),
            // The broker's limit applies to the batch; a message alone is checked here too.
            (
                "message.max.bytes",
                (self.max_message_bytes + 4096).to_string(),
            ),
            ("linger.ms", self.linger.as_millis().to_string()),
            ("batch.size", self.batch_bytes.max(1).to_string()),
            (
                "queue.buffering.max.kbytes",
                (self.max_buffered_bytes / 1024).max(1).to_string(),
            ),
            // One attempt (with librdkafka's own retries inside) per 30 s; ours go on after it.
            ("message.timeout.ms", "30000".to_owned()),
        ]);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_settings_map_to_librdkafka_and_the_password_is_never_shown() {
        let mut c = KafkaConfig::default();
        for k in KafkaConfig::KEYS {
            match k.name {
                "kafka.tls" => k.set(&mut c, "true").unwrap(),
                "kafka.sasl_mechanism" => k.set(&mut c, "scram-sha-512").unwrap(),
                "kafka.sasl_username" => k.set(&mut c, "sidecar").unwrap(),
                "kafka.sasl_password" => k.set(&mut c, "s3cret").unwrap(),
                "kafka.compression" => k.set(&mut c, "lz4").unwrap(),
                _ => {}
            }
        }
        let s = c.producer_settings();
        let get = |n: &str| s.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("compression.type"), Some("lz4"));
        assert_eq!(get("acks"), Some("all"));
        let shown: String = KafkaConfig::KEYS
            .iter()
            .map(|k| k.show(&mut c.clone()))
            .collect();
        assert!(!shown.contains("s3cret") && !format!("{c:?}").contains("s3cret"));
        let bad = KafkaConfig::KEYS
            .iter()
            .find(|k| k.name == "kafka.encoding")
            .unwrap();
        assert!(bad.set(&mut c, "otlp_json").is_err());
    }

    #[test]
    fn msk_iam_is_oauthbearer_over_tls_with_the_system_cas_and_no_password() {
        let mut c = KafkaConfig::default();
        let key = |n: &str| KafkaConfig::KEYS.iter().find(|k| k.name == n).unwrap();
        key("kafka.sasl_mechanism")
            .set(&mut c, "AWS_MSK_IAM_OAUTHBEARER")
            .unwrap();
        let s = c.consumer_settings();
        let get = |n: &str| s.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(get("ssl.ca.location"), Some("probe"));
        assert_eq!(get("sasl.username"), None);
        key("kafka.sasl_mechanism")
            .set(&mut c, "aws_msk_iam")
            .unwrap();
        assert_eq!(c.sasl_mechanism, Some(SaslMechanism::AwsMskIam));
    }

    #[test]
    fn the_consumer_stores_offsets_itself_and_commits_them_every_second() {
        let s = KafkaConfig::default().consumer_settings();
        let get = |n: &str| s.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("enable.auto.offset.store"), Some("false"));
        assert_eq!(get("enable.auto.commit"), Some("true"));
        assert_eq!(get("auto.commit.interval.ms"), Some("1000"));
        assert_eq!(
            get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
    }
}
