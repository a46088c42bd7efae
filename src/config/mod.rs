//! How settings are declared and read: each component declares its keys once ([`Key`]: name,
//! type, help, unit, the field it sets; the default is the section's `Default`, built from named
//! constants), and that one list drives the TOML file, `SIDETRACE_*` variables, `--set`, flags,
//! `config default`, `config check` and `--help`. Precedence: defaults < file < env < flags.

pub mod parse;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;

pub use parse::{parse_bool, parse_bytes, parse_count, parse_duration};

/// Exit code for configuration errors (EX_USAGE, as linkerd2-proxy uses).
pub const EXIT_CONFIG: i32 = 64;

/// How a key reads and shows its value.
pub enum Field<C: 'static> {
    Addr(fn(&mut C) -> &mut SocketAddr),
    Bool(fn(&mut C) -> &mut bool),
    /// A positive count or size: plain, or with a KiB/MiB/GiB suffix.
    Count(fn(&mut C) -> &mut usize),
    Duration(fn(&mut C) -> &mut Duration),
    /// A comma list (a TOML array in files).
    List(fn(&mut C) -> &mut Vec<String>),
    /// Free text, trimmed (a path, a name).
    Text(fn(&mut C) -> &mut String),
    /// Anything else: its own parser and its TOML form.
    Custom {
        set: fn(&mut C, &str) -> Result<(), String>,
        show: fn(&C) -> String,
    },
}

/// One setting, declared once. Its env twin is `SIDETRACE_` + the name upper-cased, dots as `_`.
pub struct Key<C: 'static> {
    /// The full key: `xray.concurrency`, or `otlp_grpc_addr` at the top level.
    pub name: &'static str,
    /// One line for `config default` and `--help`.
    pub help: &'static str,
    pub field: Field<C>,
    /// Also a command-line flag `--name-with-dashes` (the interface contract's flags).
    pub flag: bool,
    /// What `--help` calls the value, when the field's kind says too little.
    pub value_name: Option<&'static str>,
}

impl<C> Key<C> {
    const fn new(name: &'static str, help: &'static str, field: Field<C>) -> Self {
        Key {
            name,
            help,
            field,
            flag: false,
            value_name: None,
        }
    }

    pub const fn addr(
        name: &'static str,
        help: &'static str,
        f: fn(&mut C) -> &mut SocketAddr,
    ) -> Self {
        Key::new(name, help, Field::Addr(f))
    }

    pub const fn bool(name: &'static str, help: &'static str, f: fn(&mut C) -> &mut bool) -> Self {
        Key::new(name, help, Field::Bool(f))
    }

    pub const fn count(
        name: &'static str,
        help: &'static str,
        f: fn(&mut C) -> &mut usize,
    ) -> Self {
        Key::new(name, help, Field::Count(f))
    }

    pub const fn duration(
        name: &'static str,
        help: &'static str,
        f: fn(&mut C) -> &mut Duration,
    ) -> Self {
        Key::new(name, help, Field::Duration(f))
    }

    pub const fn list(
        name: &'static str,
        help: &'static str,
        f: fn(&mut C) -> &mut Vec<String>,
    ) -> Self {
        Key::new(name, help, Field::List(f))
    }

    pub const fn text(
        name: &'static str,
        help: &'static str,
        f: fn(&mut C) -> &mut String,
    ) -> Self {
        Key::new(name, help, Field::Text(f))
    }

    pub const fn custom(
        name: &'static str,
        help: &'static str,
        set: fn(&mut C, &str) -> Result<(), String>,
        show: fn(&C) -> String,
    ) -> Self {
        Key::new(name, help, Field::Custom { set, show })
    }

    /// Also offered as a command-line flag.
    pub const fn flag(mut self) -> Self {
        self.flag = true;
        self
    }

    /// Names the value in `--help` (`BYTES`, `RATIO`, ...).
    pub const fn with_value_name(mut self, name: &'static str) -> Self {
        self.value_name = Some(name);
        self
    }

    /// Sets the key from its text form.
    pub fn set(&self, c: &mut C, value: &str) -> Result<(), String> {
        match &self.field {
            Field::Addr(f) => *f(c) = parse::parse_addr(value)?,
            Field::Bool(f) => *f(c) = parse_bool(value)?,
            Field::Count(f) => *f(c) = parse_count(value)?,
            Field::Duration(f) => *f(c) = parse_duration(value)?,
            Field::List(f) => *f(c) = parse::parse_list(value),
            Field::Text(f) => *f(c) = value.trim().to_owned(),
            Field::Custom { set, .. } => set(c, value)?,
        }
        Ok(())
    }

    /// The value as a TOML literal (what `config default` prints).
    pub fn show(&self, c: &mut C) -> String {
        match &self.field {
            Field::Addr(f) => parse::toml_string(&f(c).to_string()),
            Field::Bool(f) => f(c).to_string(),
            Field::Count(f) => f(c).to_string(),
            Field::Duration(f) => parse::toml_string(&parse::show_duration(*f(c))),
            Field::List(f) => toml::Value::Array(
                f(c).iter()
                    .map(|s| toml::Value::String(s.clone()))
                    .collect(),
            )
            .to_string(),
            Field::Text(f) => parse::toml_string(f(c)),
            Field::Custom { show, .. } => show(c),
        }
    }

    /// What kind of value it takes, for `--help`.
    pub fn unit(&self) -> &'static str {
        if let Some(name) = self.value_name {
            return name;
        }
        match &self.field {
            Field::Addr(_) => "ADDR",
            Field::Bool(_) => "BOOL",
            Field::Count(_) => "N",
            Field::Duration(_) => "DURATION",
            Field::List(_) => "LIST",
            Field::Text(_) => "TEXT",
            Field::Custom { .. } => "VALUE",
        }
    }
}

/// The environment variable that sets a key.
pub fn env_name(key: &str) -> String {
    format!("SIDETRACE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The flag that sets a key: `otlp_grpc_addr` → `otlp-grpc-addr`.
pub fn flag_name(key: &str) -> String {
    key.replace(['_', '.'], "-")
}

/// A config section: a component's typed settings and the keys that set them.
pub trait Section: Default + Debug + Clone + 'static {
    const KEYS: &'static [Key<Self>];
}

/// What the whole config needs from one mounted section, whatever its type.
pub trait Keys<R>: Send + Sync {
    /// (name, help, unit, flag) of every key.
    fn list(&self) -> Vec<(&'static str, &'static str, &'static str, bool)>;
    /// `None` when the key is not this section's.
    fn set(&self, root: &mut R, name: &str, value: &str) -> Option<Result<(), String>>;
    fn show(&self, root: &mut R, name: &str) -> Option<String>;
}

/// A section mounted in the whole config `R` at the field `part` returns.
pub struct Mounted<R, C: 'static> {
    pub part: fn(&mut R) -> &mut C,
}

impl<R, C: Section> Keys<R> for Mounted<R, C> {
    fn list(&self) -> Vec<(&'static str, &'static str, &'static str, bool)> {
        C::KEYS
            .iter()
            .map(|k| (k.name, k.help, k.unit(), k.flag))
            .collect()
    }

    fn set(&self, root: &mut R, name: &str, value: &str) -> Option<Result<(), String>> {
        let key = C::KEYS.iter().find(|k| k.name == name)?;
        Some(key.set((self.part)(root), value))
    }

    fn show(&self, root: &mut R, name: &str) -> Option<String> {
        let key = C::KEYS.iter().find(|k| k.name == name)?;
        Some(key.show((self.part)(root)))
    }
}

/// A problem with one setting, named by its key and where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.key, self.source, self.message)
    }
}

/// A TOML document flattened to `(dotted key, value as text)`, or why it is not TOML.
pub fn flatten_toml(text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let mut flat = Vec::new();
    flatten("", &table, &mut flat);
    Ok(flat
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (key, text)
        })
        .collect())
}

fn flatten<'a>(prefix: &str, table: &'a toml::Table, out: &mut Vec<(String, &'a toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other)),
        }
    }
}

/// The AWS region from the SDK's variables, when one is set.
pub fn aws_region(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|v| env(v).filter(|r| !r.is_empty()))
}
