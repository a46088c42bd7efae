//! X-Ray centralised sampling: rule matching by priority, reservoir + fixed rate, targets from
//! `GetSamplingTargets`, statistics reported back — as the X-Ray SDKs apply them (aws.md §1.3).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_xray::types::{SamplingStatisticsDocument, SamplingTargetDocument};
use tokio::time::Instant;
use tracing::{info, warn};

/// How often rules are fetched (X-Ray SDKs: every 300 s).
pub const RULES_INTERVAL: Duration = Duration::from_secs(300);
/// How often targets are fetched and statistics reported (X-Ray SDKs: every 10 s).
pub const TARGETS_INTERVAL: Duration = Duration::from_secs(10);
/// GetSamplingTargets API limit: statistics documents per call.
pub const MAX_STATISTICS_PER_CALL: usize = 25;
/// The account's out-of-the-box rule (and our fallback): 1 trace/s, then 5 %.
pub const DEFAULT_RESERVOIR: u32 = 1;
pub const DEFAULT_FIXED_RATE: f64 = 0.05;
/// Priority of the built-in `Default` rule, which matches everything.
pub const DEFAULT_PRIORITY: i32 = 10_000;

/// The attributes of a trace's entry span that rules match on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestAttrs {
    pub service_name: String,
    /// The segment origin, e.g. `AWS::ECS::Fargate`.
    pub service_type: String,
    pub host: String,
    pub http_method: String,
    pub url_path: String,
}

/// A rule as `GetSamplingRules` returns it (only the fields the decision uses).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub priority: i32,
    pub fixed_rate: f64,
    pub reservoir_size: u32,
    pub service_name: String,
    pub service_type: String,
    pub host: String,
    pub http_method: String,
    pub url_path: String,
}

impl Rule {
    /// The built-in default rule (also the local fallback when rules cannot be fetched).
    pub fn default_rule() -> Rule {
        Rule {
            name: "Default".into(),
            priority: DEFAULT_PRIORITY,
            fixed_rate: DEFAULT_FIXED_RATE,
            reservoir_size: DEFAULT_RESERVOIR,
            service_name: "*".into(),
            service_type: "*".into(),
            host: "*".into(),
            http_method: "*".into(),
            url_path: "*".into(),
        }
    }

    fn matches(&self, r: &RequestAttrs) -> bool {
        // An attribute the request lacks matches anything (aws-xray-sdk-go strategy/sampling).
        let m = |pattern: &str, value: &str| value.is_empty() || glob_match(pattern, value);
        m(&self.service_name, &r.service_name)
            && m(&self.service_type, &r.service_type)
            && m(&self.host, &r.host)
            && m(&self.http_method, &r.http_method)
            && m(&self.url_path, &r.url_path)
    }
}

/// Case-insensitive glob with `*` (any run) and `?` (one character), as X-Ray rules use.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Counts reported to X-Ray for one rule, then zeroed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: u32,
    pub sampled: u32,
    pub borrows: u32,
}

#[derive(Debug, Clone)]
struct RuleState {
    rule: Rule,
    /// Reservoir quota assigned by X-Ray, valid until the TTL.
    quota: Option<(u32, Instant)>,
    second: u64,
    used_this_second: u32,
    borrowed_this_second: bool,
    counts: Counts,
}

impl RuleState {
    fn new(rule: Rule) -> Self {
        RuleState {
            rule,
            quota: None,
            second: u64::MAX,
            used_this_second: 0,
            borrowed_this_second: false,
            counts: Counts::default(),
        }
    }

    /// Reservoir first (the quota, or borrowing one trace a second until a quota arrives), then
    /// the fixed rate. `random` is uniform in [0, 1).
    fn decide(&mut self, second: u64, now: Instant, random: f64) -> bool {
        self.counts.requests += 1;
        if second != self.second {
            self.second = second;
            self.used_this_second = 0;
            self.borrowed_this_second = false;
        }
        let keep = match self.quota {
            Some((quota, ttl)) if now < ttl => {
                if self.used_this_second < quota {
                    self.used_this_second += 1;
                    true
                } else {
                    random < self.rule.fixed_rate
                }
            }
            _ => {
                if self.rule.reservoir_size > 0 && !self.borrowed_this_second {
                    self.borrowed_this_second = true;
                    self.counts.borrows += 1;
                    true
                } else {
                    random < self.rule.fixed_rate
                }
            }
        };
        if keep {
            self.counts.sampled += 1;
        }
        keep
    }
}

/// The rule set one agent applies, refreshed by the poller.
#[derive(Debug)]
pub struct Rules {
    /// Sorted by priority, then name; the `Default` rule last.
    rules: Vec<RuleState>,
    epoch: Instant,
    /// Whether rules came from X-Ray (false: the local fallback).
    pub from_xray: bool,
}

impl Rules {
    /// The local fallback: the default rule only.
    pub fn fallback(now: Instant) -> Self {
        Rules {
            rules: vec![RuleState::new(Rule::default_rule())],
            epoch: now,
            from_xray: false,
        }
    }

    /// Replaces the rules, keeping quotas and counts of rules that stay.
    pub fn set_rules(&mut self, mut rules: Vec<Rule>) {
        if !rules.iter().any(|r| r.name == "Default") {
            rules.push(Rule::default_rule());
        }
        rules.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        let old = std::mem::take(&mut self.rules);
        self.rules = rules
            .into_iter()
            .map(|rule| match old.iter().find(|o| o.rule.name == rule.name) {
                Some(o) => RuleState { rule, ..o.clone() },
                None => RuleState::new(rule),
            })
            .collect();
        self.from_xray = true;
    }

    /// The first matching rule's decision, and that rule's name.
    pub fn decide(&mut self, req: &RequestAttrs, now: Instant, random: f64) -> (bool, &str) {
        let second = now.duration_since(self.epoch).as_secs();
        let idx = self
            .rules
            .iter()
            .position(|r| r.rule.matches(req))
            .unwrap_or(self.rules.len() - 1);
        let state = &mut self.rules[idx];
        let keep = state.decide(second, now, random);
        (keep, &state.rule.name)
    }

    /// Applies one `SamplingTargetDocument`: new fixed rate and reservoir quota with its TTL.
    pub fn apply_target(
        &mut self,
        name: &str,
        fixed_rate: f64,
        quota: Option<(u32, SystemTime)>,
        now: Instant,
    ) {
        if let Some(s) = self.rules.iter_mut().find(|s| s.rule.name == name) {
            s.rule.fixed_rate = fixed_rate;
            if let Some((q, ttl)) = quota {
                let left = ttl.duration_since(SystemTime::now()).unwrap_or_default();
                s.quota = Some((q, now + left));
            }
        }
    }

    /// Counts of rules that saw requests since the last report (then zeroed).
    pub fn take_counts(&mut self) -> Vec<(String, Counts)> {
        self.rules
            .iter_mut()
            .filter(|s| s.counts.requests > 0)
            .map(|s| (s.rule.name.clone(), std::mem::take(&mut s.counts)))
            .collect()
    }

    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|s| s.rule.name.as_str()).collect()
    }
}

/// Converts `GetSamplingRules` records, keeping what the SDKs use: version 1, resource `*`, no
/// attribute conditions (aws-xray-sdk-go `strategy/sampling`).
fn rules_from_api(records: &[aws_sdk_xray::types::SamplingRuleRecord]) -> Vec<Rule> {
    records
        .iter()
        .filter_map(|r| r.sampling_rule())
        .filter(|r| {
            r.version() == 1
                && r.resource_arn() == "*"
                && r.attributes().is_none_or(|a| a.is_empty())
        })
        .map(|r| Rule {
            name: r.rule_name().unwrap_or_default().to_owned(),
            priority: r.priority(),
            fixed_rate: r.fixed_rate(),
            reservoir_size: r.reservoir_size().max(0) as u32,
            service_name: r.service_name().to_owned(),
            service_type: r.service_type().to_owned(),
            host: r.host().to_owned(),
            http_method: r.http_method().to_owned(),
            url_path: r.url_path().to_owned(),
        })
        .collect()
}

fn to_system_time(t: &aws_smithy_types::DateTime) -> SystemTime {
    SystemTime::try_from(*t).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A 24-hex client ID, random per process (the X-Ray SDKs use 12 random bytes).
pub fn client_id(seed: u64) -> String {
    let mut x = seed | 1;
    let mut out = String::with_capacity(24);
    for _ in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{:08x}", x as u32));
    }
    out
}

/// Polls rules and targets for the life of the agent; falls back to the default rule (and says
/// so once) while rules cannot be fetched.
pub async fn poll(
    client: aws_sdk_xray::Client,
    rules: Arc<Mutex<Rules>>,
    client_id: String,
    targets_interval: Duration,
) {
    let mut next_rules = Instant::now();
    let mut warned = false;
    let mut last_rules_fetch = SystemTime::UNIX_EPOCH;
    loop {
        let now = Instant::now();
        if now >= next_rules {
            match fetch_rules(&client).await {
                Ok(list) => {
                    info!(rules = list.len(), "Fetched X-Ray sampling rules.");
                    last_rules_fetch = SystemTime::now();
                    lock(&rules).set_rules(list);
                    warned = false;
                }
                Err(e) if !warned => {
                    warn!(error = %e, fallback = "1 trace/s + 5% per agent", "Cannot fetch X-Ray sampling rules; using the local default rule until they can be fetched.");
                    warned = true;
                }
                Err(_) => {}
            }
            next_rules = now + RULES_INTERVAL;
        }
        tokio::time::sleep(targets_interval).await;
        let counts = lock(&rules).take_counts();
        if counts.is_empty() || !lock(&rules).from_xray {
            continue;
        }
        match report(&client, &rules, &client_id, counts).await {
            Ok(modified) if modified > last_rules_fetch => next_rules = Instant::now(),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "GetSamplingTargets failed; keeping the current targets."),
        }
    }
}

fn lock(rules: &Mutex<Rules>) -> std::sync::MutexGuard<'_, Rules> {
    rules.lock().unwrap_or_else(|e| e.into_inner())
}

async fn fetch_rules(client: &aws_sdk_xray::Client) -> Result<Vec<Rule>, String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .get_sampling_rules()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())?;
        out.extend(rules_from_api(page.sampling_rule_records()));
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Reports statistics (25 per call), applies the targets, and returns `LastRuleModification`.
async fn report(
    client: &aws_sdk_xray::Client,
    rules: &Mutex<Rules>,
    client_id: &str,
    counts: Vec<(String, Counts)>,
) -> Result<SystemTime, String> {
    let mut modified = SystemTime::UNIX_EPOCH;
    let now = aws_smithy_types::DateTime::from(SystemTime::now());
    for chunk in counts.chunks(MAX_STATISTICS_PER_CALL) {
        let docs: Vec<SamplingStatisticsDocument> = chunk
            .iter()
            .map(|(name, c)| {
                SamplingStatisticsDocument::builder()
                    .rule_name(name)
                    .client_id(client_id)
                    .timestamp(now)
                    .request_count(c.requests as i32)
                    .sampled_count(c.sampled as i32)
                    .borrow_count(c.borrows as i32)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        let out = client
            .get_sampling_targets()
            .set_sampling_statistics_documents(Some(docs))
            .send()
            .await
            .map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())?;
        let mut guard = lock(rules);
        let t = Instant::now();
        for doc in out.sampling_target_documents() {
            apply(&mut guard, doc, t);
        }
        if let Some(m) = out.last_rule_modification() {
            modified = modified.max(to_system_time(m));
        }
    }
    Ok(modified)
}

fn apply(rules: &mut Rules, doc: &SamplingTargetDocument, now: Instant) {
    let Some(name) = doc.rule_name() else { return };
    let quota = doc
        .reservoir_quota()
        .zip(doc.reservoir_quota_ttl())
        .map(|(q, ttl)| (q.max(0) as u32, to_system_time(ttl)));
    rules.apply_target(name, doc.fixed_rate(), quota, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        name: &str,
        priority: i32,
        rate: f64,
        reservoir: u32,
        service: &str,
        method: &str,
        path: &str,
    ) -> Rule {
        Rule {
            name: name.into(),
            priority,
            fixed_rate: rate,
            reservoir_size: reservoir,
            service_name: service.into(),
            service_type: "*".into(),
            host: "*".into(),
            http_method: method.into(),
            url_path: path.into(),
        }
    }

    fn req(service: &str, method: &str, path: &str) -> RequestAttrs {
        RequestAttrs {
            service_name: service.into(),
            http_method: method.into(),
            url_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("/api/*", "/API/orders/7"));
        assert!(glob_match("GE?", "get"));
        assert!(!glob_match("GE?", "GETS"));
        assert!(glob_match("*/health", "/svc/health"));
        assert!(!glob_match("/api/*", "/web/x"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[tokio::test(start_paused = true)]
    async fn first_match_by_priority_then_name_decides() {
        let mut r = Rules::fallback(Instant::now());
        r.set_rules(vec![
            rule("health", 5, 0.0, 0, "*", "*", "/health"),
            rule("api-post", 10, 1.0, 0, "shop", "POST", "/api/*"),
            rule("api-any", 10, 0.0, 0, "shop", "*", "/api/*"),
        ]);
        assert_eq!(r.rule_names(), ["health", "api-any", "api-post", "Default"]);
        let now = Instant::now();
        assert_eq!(
            r.decide(&req("shop", "GET", "/health"), now, 0.5),
            (false, "health")
        );
        // Same priority: ties go by name, so api-any (rate 0) wins over api-post.
        assert_eq!(
            r.decide(&req("shop", "POST", "/api/orders"), now, 0.5).1,
            "api-any"
        );
        assert_eq!(r.decide(&req("other", "GET", "/x"), now, 0.5).1, "Default");
    }

    #[tokio::test(start_paused = true)]
    async fn borrows_one_per_second_until_a_quota_arrives_then_uses_it() {
        let start = Instant::now();
        let mut r = Rules::fallback(start);
        r.set_rules(vec![rule("r", 1, 0.0, 10, "*", "*", "*")]);
        let q = req("s", "GET", "/");
        // No quota yet: borrow 1 per second, the rest goes to the fixed rate (0 here).
        let kept = (0..5)
            .filter(|_| r.decide(&q, Instant::now(), 0.9).0)
            .count();
        assert_eq!(kept, 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            r.decide(&q, Instant::now(), 0.9).0,
            "a new second allows another borrow"
        );
        let c = r.take_counts();
        assert_eq!(
            c,
            vec![(
                "r".to_string(),
                Counts {
                    requests: 6,
                    sampled: 2,
                    borrows: 2
                }
            )]
        );
        assert!(
            r.take_counts().is_empty(),
            "counts are zeroed once reported"
        );

        r.apply_target(
            "r",
            0.0,
            Some((3, SystemTime::now() + Duration::from_secs(10))),
            Instant::now(),
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let kept = (0..10)
            .filter(|_| r.decide(&q, Instant::now(), 0.9).0)
            .count();
        assert_eq!(kept, 3, "the quota of 3/s applies");
        assert_eq!(
            r.take_counts()[0].1,
            Counts {
                requests: 10,
                sampled: 3,
                borrows: 0
            }
        );
        // The TTL passes: back to borrowing.
        tokio::time::advance(Duration::from_secs(11)).await;
        let kept = (0..10)
            .filter(|_| r.decide(&q, Instant::now(), 0.9).0)
            .count();
        assert_eq!(kept, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_rate_applies_beyond_the_reservoir() {
        let mut r = Rules::fallback(Instant::now());
        r.set_rules(vec![rule("r", 1, 0.25, 0, "*", "*", "*")]);
        let q = req("s", "GET", "/");
        let kept = (0..1000)
            .filter(|i| r.decide(&q, Instant::now(), f64::from(*i) / 1000.0).0)
            .count();
        assert_eq!(kept, 250);
    }

    #[test]
    fn client_ids_are_24_hex() {
        let id = client_id(42);
        assert_eq!(id.len(), 24);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
