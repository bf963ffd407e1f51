//! Every example in the docs loads through the loader it is written for, so
//! that a newcomer who copies one gets something that works.
//!
//! # The marker convention
//! A fenced block in `README.md`, `docs/*.md`, `deploy/*.md` or
//! `examples/*.md` says what it
//! is in its info string, after the language: ```` ```toml gateway-config ````
//! (renderers use the first word for highlighting and ignore the rest).
//! The kinds, and what each block is checked with:
//! - `toml gateway-config`: a gateway config file, or a part of one (what it
//!   leaves out takes its default): [`Config::from_toml`], validation included.
//! - `toml fault-plan`, `json fault-plan`: an emulator fault plan, written to
//!   a `.toml` / `.json` file and read with [`load_fault_file`], as
//!   `emulator --faults FILE` reads it.
//! - `json iam-policy`: an IAM policy document (`Version`, `Statement`s with
//!   `Effect`, `Action`, `Resource`).
//! - `jsonl send-input`: input lines for `partner-events-gateway send`, each
//!   through [`send::parse_line`].
//! - `json grpc-service-config`: a gRPC client's service config: a JSON
//!   object of the fields gRPC defines (`loadBalancingConfig`, ...).
//! - `yaml buf-gen`: a `buf.gen.yaml` (version v2, each plugin with `remote`
//!   or `local` and `out`).
//! - `sh` and `console` (a session: `$ ` starts a command, other lines are its
//!   output): no marker needed; the JSON inside the commands is checked.
//!   `grpcurl -d` bodies against the request message of the method called
//!   (from the descriptor sets the gateway serves by reflection: every key a
//!   field, every value of the field's type, one member per oneof);
//!   `curl -d` bodies as JSON; `aws events put-partner-events --entries` as a
//!   list of EventBridge entries; `printf` lines piped into `send` through
//!   [`send::parse_line`] (a line not starting with `{` is a deliberately bad
//!   one and must be refused).
//!
//! Any other block, a bare ```` ``` ```` included, fails the test: add its
//! kind here first. In `deploy/`, `*.toml` files are gateway configs
//! ([`Config::load`]) and `iam-policy*.json` files IAM policies; any other
//! `.json` there fails.

use std::{collections::HashMap, path::PathBuf};

use partner_events_gateway::{config::Config, emulator::load_fault_file, send};
use prost::Message as _;
use prost_types::{field_descriptor_proto::Type, DescriptorProto, FileDescriptorSet};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose blocks are checked.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for dir in ["docs", "deploy", "examples"] {
        let mut md: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        md.sort();
        files.extend(md);
    }
    files
}

/// One fenced block: where it starts, its info string, its text.
struct Block {
    line: usize,
    info: String,
    text: String,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        // CommonMark: at most 3 spaces of indent, and no backtick in the info
        // string (```` ``` ```` inline code at the start of a line is no fence).
        let is_fence = trimmed.starts_with("```")
            && line.len() - trimmed.len() < 4
            && !trimmed.trim_start_matches('`').contains('`');
        match (&mut open, is_fence) {
            (None, true) => {
                open = Some(Block {
                    line: i + 1,
                    info: trimmed.trim_start_matches('`').trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(_), true) if trimmed.trim_end() == "```" => blocks.push(open.take().unwrap()),
            (Some(b), _) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, false) => {}
        }
    }
    assert!(open.is_none(), "a fenced block is never closed");
    blocks
}

/// What a block holds, from its info string.
#[derive(Debug, PartialEq)]
enum Kind {
    GatewayConfig,
    FaultPlan { ext: &'static str },
    IamPolicy,
    SendInput,
    ServiceConfig,
    BufGen,
    Shell { session: bool },
}

fn kind_of(info: &str) -> Result<Kind, String> {
    let words: Vec<&str> = info.split_whitespace().collect();
    match words.as_slice() {
        ["toml", "gateway-config"] => Ok(Kind::GatewayConfig),
        ["toml", "fault-plan"] => Ok(Kind::FaultPlan { ext: "toml" }),
        ["json", "fault-plan"] => Ok(Kind::FaultPlan { ext: "json" }),
        ["json", "iam-policy"] => Ok(Kind::IamPolicy),
        ["jsonl", "send-input"] => Ok(Kind::SendInput),
        ["json", "grpc-service-config"] => Ok(Kind::ServiceConfig),
        ["yaml", "buf-gen"] => Ok(Kind::BufGen),
        ["sh"] => Ok(Kind::Shell { session: false }),
        ["console"] => Ok(Kind::Shell { session: true }),
        _ => Err(format!(
            "a block of no known kind (info string `{info}`): mark it as tests/doc_examples.rs \
             describes (```toml gateway-config, ```toml fault-plan, ```json iam-policy, ...)"
        )),
    }
}

/// What the checks found, so that a scanner that stops finding examples
/// fails instead of passing quietly.
#[derive(Default, Debug)]
struct Counts {
    configs: usize,
    fault_plans: usize,
    policies: usize,
    send_lines: usize,
    grpc_bodies: usize,
    other_json: usize,
}

struct Checker {
    schema: Schema,
    scratch: PathBuf,
    counts: Counts,
    written: usize,
}

impl Checker {
    fn new() -> Self {
        // One directory per checker: the tests run in parallel, in one process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch =
            std::env::temp_dir().join(format!("peg-doc-examples-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        Self {
            schema: Schema::load(),
            scratch,
            counts: Counts::default(),
            written: 0,
        }
    }

    fn check(&mut self, kind: &Kind, text: &str) -> Result<(), String> {
        match kind {
            Kind::GatewayConfig => {
                Config::from_toml(text, "example").map_err(|e| e.to_string())?;
                self.counts.configs += 1;
            }
            Kind::FaultPlan { ext } => {
                self.written += 1;
                let path = self.scratch.join(format!("plan-{}.{ext}", self.written));
                std::fs::write(&path, text).unwrap();
                load_fault_file(&path).map_err(|e| e.to_string())?;
                self.counts.fault_plans += 1;
            }
            Kind::IamPolicy => {
                check_iam_policy(text)?;
                self.counts.policies += 1;
            }
            Kind::SendInput => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    send::parse_line(line).map_err(|e| format!("send input `{line}`: {e}"))?;
                    self.counts.send_lines += 1;
                }
            }
            Kind::ServiceConfig => {
                let config = parse_json(text)?;
                let fields = config
                    .as_object()
                    .ok_or("a service config is a JSON object")?;
                for key in fields.keys() {
                    if !SERVICE_CONFIG_FIELDS.contains(&key.as_str()) {
                        return Err(format!("`{key}` is not a gRPC service config field"));
                    }
                }
                self.counts.other_json += 1;
            }
            Kind::BufGen => {
                let gen: serde_yaml::Value =
                    serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
                if gen["version"].as_str() != Some("v2") {
                    return Err("a buf.gen.yaml of `version: v2`".into());
                }
                let plugins = gen["plugins"].as_sequence().ok_or("no `plugins`")?;
                for p in plugins {
                    if p["remote"].as_str().or(p["local"].as_str()).is_none()
                        || p["out"].as_str().is_none()
                    {
                        return Err(format!(
                            "a plugin needs `remote` (or `local`) and `out`: {p:?}"
                        ));
                    }
                }
                self.counts.other_json += 1;
            }
            Kind::Shell { session } => {
                for command in commands(text, *session) {
                    self.check_command(&command)?;
                }
            }
        }
        Ok(())
    }

    /// Checks the JSON inside one shell command line (a pipeline).
    fn check_command(&mut self, command: &str) -> Result<(), String> {
        let words = shell_words(command);
        let segments: Vec<&[String]> = words.split(|w| w == "|").collect();
        for (i, seg) in segments.iter().enumerate() {
            let Some(program) = seg.first() else { continue };
            let after = |flag: &str| {
                seg.iter()
                    .position(|w| w == flag)
                    .and_then(|p| seg.get(p + 1))
            };
            match program.as_str() {
                "grpcurl" => {
                    if let Some(body) = after("-d") {
                        let method = seg
                            .iter()
                            .rev()
                            .find(|w| w.contains('/') && !w.starts_with('-'))
                            .ok_or_else(|| format!("grpcurl with -d but no method: {command}"))?;
                        let value = parse_json(body)?;
                        self.schema.check_request(method, &value)?;
                        self.counts.grpc_bodies += 1;
                    }
                }
                "curl" => {
                    if let Some(body) = after("-d").or_else(|| after("--data")) {
                        parse_json(body)?;
                        self.counts.other_json += 1;
                    }
                }
                "aws" if seg.iter().any(|w| w == "put-partner-events") => {
                    let entries = after("--entries").ok_or_else(|| {
                        format!("put-partner-events without --entries: {command}")
                    })?;
                    check_aws_entries(&parse_json(entries)?)?;
                    self.counts.other_json += 1;
                }
                "printf"
                    if segments[i + 1..]
                        .iter()
                        .any(|s| s.iter().any(|w| w == "send")) =>
                {
                    // printf FORMAT LINE...: each LINE is one input line of `send`.
                    for line in seg.iter().skip(2) {
                        let parsed = send::parse_line(line);
                        match (line.starts_with('{'), parsed) {
                            (true, Err(e)) => return Err(format!("send input `{line}`: {e}")),
                            (false, Ok(_)) => {
                                return Err(format!(
                                    "send input `{line}` is shown as a bad line but parses"
                                ))
                            }
                            _ => self.counts.send_lines += 1,
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The top-level fields of a gRPC service config (grpc/service_config.proto).
const SERVICE_CONFIG_FIELDS: &[&str] = &[
    "loadBalancingPolicy",
    "loadBalancingConfig",
    "methodConfig",
    "retryThrottling",
    "healthCheckConfig",
];

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))
}

fn check_iam_policy(text: &str) -> Result<(), String> {
    let policy = parse_json(text)?;
    if policy["Version"] != "2012-10-17" {
        return Err("an IAM policy needs \"Version\": \"2012-10-17\"".into());
    }
    let statements = policy["Statement"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or("an IAM policy needs a non-empty \"Statement\" list")?;
    for s in statements {
        let effect_ok = s["Effect"] == "Allow" || s["Effect"] == "Deny";
        let has = |k: &str| s[k].is_string() || s[k].as_array().is_some_and(|a| !a.is_empty());
        if !effect_ok || !has("Action") || !has("Resource") {
            return Err(format!(
                "an IAM statement needs Effect (Allow/Deny), Action and Resource: {s}"
            ));
        }
    }
    Ok(())
}

/// `--entries` of `aws events put-partner-events`: EventBridge's entry shape.
fn check_aws_entries(entries: &Value) -> Result<(), String> {
    let list = entries
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or("--entries must be a non-empty JSON list")?;
    for e in list {
        let obj = e.as_object().ok_or("an entry must be a JSON object")?;
        for key in obj.keys() {
            if !["Time", "Source", "Resources", "DetailType", "Detail"].contains(&key.as_str()) {
                return Err(format!("`{key}` is not a PutPartnerEvents entry field"));
            }
        }
        let detail: Value = serde_json::from_str(obj["Detail"].as_str().unwrap_or("null"))
            .map_err(|e| format!("Detail is not JSON text: {e}"))?;
        if !detail.is_object() {
            return Err("Detail must be JSON text holding an object".into());
        }
    }
    Ok(())
}

/// The commands of a shell block, continuation lines joined. In a session
/// (`console`) a command starts with `$ ` and other lines are output.
fn commands(text: &str, session: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(cmd) = &mut current {
            cmd.push('\n');
            cmd.push_str(line);
        } else if session {
            match line.strip_prefix("$ ") {
                Some(rest) => current = Some(rest.to_string()),
                None => continue,
            }
        } else if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        } else {
            current = Some(line.to_string());
        }
        let cmd = current.as_ref().unwrap();
        if !(cmd.ends_with('\\') || has_open_quote(cmd)) {
            out.push(current.take().unwrap());
        }
    }
    out.extend(current);
    out
}

fn has_open_quote(cmd: &str) -> bool {
    let mut quote = None;
    let mut escaped = false;
    for c in cmd.chars() {
        match (quote, c) {
            (_, _) if escaped => escaped = false,
            (None, '\\') | (Some('"'), '\\') => escaped = true,
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    quote.is_some()
}

/// Splits a command line as a POSIX shell would, enough for the docs:
/// single and double quotes, backslashes, `|` as a word of its own, `#`
/// comments.
fn shell_words(cmd: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            w.push(chars.next().unwrap())
                        }
                        c => w.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(c) => word.get_or_insert_with(String::new).push(c),
            },
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '|' => {
                words.extend(word.take());
                words.push("|".to_string());
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The gRPC messages and methods a client of the gateway can call: the
/// descriptor sets that server reflection serves.
struct Schema {
    messages: HashMap<String, DescriptorProto>,
    /// `package.Service/Method` -> input type (`.package.Message`).
    methods: HashMap<String, String>,
}

impl Schema {
    fn load() -> Self {
        let mut schema = Self {
            messages: HashMap::new(),
            methods: HashMap::new(),
        };
        for bytes in [
            partner_events_gateway::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let set = FileDescriptorSet::decode(bytes).unwrap();
            for file in set.file {
                let package = file.package().to_string();
                for m in &file.message_type {
                    schema.add_message(&format!(".{package}"), m);
                }
                for service in &file.service {
                    for method in &service.method {
                        schema.methods.insert(
                            format!("{package}.{}/{}", service.name(), method.name()),
                            method.input_type().to_string(),
                        );
                    }
                }
            }
        }
        schema
    }

    fn add_message(&mut self, scope: &str, m: &DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for nested in &m.nested_type {
            self.add_message(&name, nested);
        }
        self.messages.insert(name, m.clone());
    }

    fn check_request(&self, method: &str, body: &Value) -> Result<(), String> {
        let input = self
            .methods
            .get(method)
            .ok_or_else(|| format!("`{method}` is not a method the gateway serves"))?;
        self.check_message(input, body, "")
            .map_err(|e| format!("{method} request: {e}"))
    }

    /// Whether `v` is the proto3 JSON form of message `type_name`.
    fn check_message(&self, type_name: &str, v: &Value, path: &str) -> Result<(), String> {
        let at = |what: &str| format!("{}: {what}", if path.is_empty() { "." } else { path });
        match type_name {
            ".google.protobuf.Struct" => {
                return v
                    .is_object()
                    .then_some(())
                    .ok_or_else(|| at("not an object"))
            }
            ".google.protobuf.Value" => return Ok(()),
            ".google.protobuf.ListValue" => {
                return v.is_array().then_some(()).ok_or_else(|| at("not a list"))
            }
            ".google.protobuf.Timestamp" => {
                let s = v.as_str().ok_or_else(|| at("not an RFC 3339 string"))?;
                return humantime::parse_rfc3339_weak(s)
                    .map(|_| ())
                    .map_err(|e| at(&format!("not an RFC 3339 timestamp: {e}")));
            }
            _ => {}
        }
        let m = self
            .messages
            .get(type_name)
            .ok_or_else(|| at(&format!("no message {type_name} in the descriptors")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| at(&format!("not an object ({type_name})")))?;
        let mut oneofs_set = HashMap::new();
        for (key, value) in obj {
            let field = m
                .field
                .iter()
                .find(|f| f.name() == key || f.json_name() == key || camel(f.name()) == *key)
                .ok_or_else(|| at(&format!("`{key}` is not a field of {type_name}")))?;
            let fpath = format!("{path}.{key}");
            if value.is_null() {
                continue;
            }
            if field.oneof_index.is_some() && !field.proto3_optional() {
                if let Some(other) = oneofs_set.insert(field.oneof_index(), key) {
                    return Err(at(&format!(
                        "`{other}` and `{key}` are members of one oneof: set one"
                    )));
                }
            }
            let repeated = field.label() == prost_types::field_descriptor_proto::Label::Repeated;
            if repeated {
                let items = value
                    .as_array()
                    .ok_or_else(|| format!("{fpath}: not a list"))?;
                for (i, item) in items.iter().enumerate() {
                    self.check_value(field, item, &format!("{fpath}[{i}]"))?;
                }
            } else {
                self.check_value(field, value, &fpath)?;
            }
        }
        Ok(())
    }

    fn check_value(
        &self,
        field: &prost_types::FieldDescriptorProto,
        v: &Value,
        path: &str,
    ) -> Result<(), String> {
        let is_int_string = |v: &Value| {
            v.as_str().is_some_and(|s| {
                s.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
        };
        let ok = match field.r#type() {
            Type::Message | Type::Group => return self.check_message(field.type_name(), v, path),
            Type::String | Type::Bytes => v.is_string(),
            Type::Bool => v.is_boolean(),
            Type::Double | Type::Float => v.is_number() || v.is_string(),
            Type::Enum => v.is_string() || v.is_i64(),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => v.is_i64() || is_int_string(v),
            Type::Uint32 | Type::Fixed32 => v.is_u64() || is_int_string(v),
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => v.is_i64() || is_int_string(v),
            Type::Uint64 | Type::Fixed64 => v.is_u64() || is_int_string(v),
        };
        ok.then_some(())
            .ok_or_else(|| format!("{path}: {v} is not a {:?}", field.r#type()))
    }
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn every_block_in_the_docs_loads_through_its_loader() {
    let mut checker = Checker::new();
    let mut failures = Vec::new();
    for file in doc_files() {
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for block in fenced_blocks(&text) {
            let result = kind_of(&block.info).and_then(|kind| checker.check(&kind, &block.text));
            if let Err(e) = result {
                failures.push(format!("{name}:{} (```{}): {e}", block.line, block.info));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&checker.scratch);
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n\n"));
    let c = &checker.counts;
    assert!(
        c.configs >= 2 && c.fault_plans >= 2 && c.grpc_bodies >= 4 && c.send_lines >= 2,
        "the docs' examples were not all found: {c:?}"
    );
}

#[test]
fn every_config_and_policy_in_deploy_loads() {
    let mut checker = Checker::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("deploy")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let result = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Config::load(&path).map(|_| ()).map_err(|e| e.to_string()),
            Some("json") if name.starts_with("iam-policy") => {
                checker.check(&Kind::IamPolicy, &std::fs::read_to_string(&path).unwrap())
            }
            Some("json") => Err("a JSON file of no known kind (see tests/doc_examples.rs)".into()),
            _ => continue,
        };
        result.unwrap_or_else(|e| panic!("deploy/{name}: {e}"));
        seen += 1;
    }
    let _ = std::fs::remove_dir_all(&checker.scratch);
    assert!(seen >= 4, "expected the configs and policies in deploy/");
}

#[test]
fn a_block_without_a_known_kind_is_refused() {
    let md = "text\n```toml\nseed = 1\n```\n```\nplain\n```\n```toml fault-plan\nseed = 1\n```\n";
    let kinds: Vec<_> = fenced_blocks(md).iter().map(|b| kind_of(&b.info)).collect();
    assert!(kinds[0].is_err(), "a toml block with no kind");
    assert!(kinds[1].is_err(), "a bare fence");
    assert_eq!(kinds[2], Ok(Kind::FaultPlan { ext: "toml" }));
}

#[test]
fn the_checks_refuse_what_the_loaders_refuse() {
    let mut c = Checker::new();
    let bad = [
        (Kind::GatewayConfig, "[server]\nlistn = \"x\"\n"),
        (
            Kind::FaultPlan { ext: "toml" },
            "[[rules]]\nkind = \"delay\"\nms = 1\n",
        ),
        (
            Kind::FaultPlan { ext: "json" },
            r#"[{"fault": {"kind": "call_html", "status": 200}}]"#,
        ),
        (Kind::IamPolicy, r#"{"Version": "2012-10-17"}"#),
        (Kind::SendInput, r#"{"Source": "x", "DetailType": "A"}"#),
        (
            Kind::Shell { session: true },
            "$ grpcurl -plaintext -d '{\"tenant\": \"demo\"}' 127.0.0.1:50051 partnerevents.v1.PartnerEvents/PutPartnerEvents\n",
        ),
        (
            Kind::Shell { session: true },
            "$ grpcurl -d '{\"entries\": [{\"detail\": \"{}\", \"detail_struct\": {}}]}' \\\n    127.0.0.1:50051 partnerevents.v1.PartnerEvents/PutPartnerEvents\n",
        ),
        (
            Kind::Shell { session: false },
            "printf '%s\\n' '{\"Detail\": 1}' | partner-events-gateway send --tenant demo\n",
        ),
    ];
    for (kind, text) in bad {
        assert!(c.check(&kind, text).is_err(), "{kind:?} accepted {text}");
    }
    let good = "$ grpcurl -plaintext -d '{\n    \"tenant_id\": \"demo\",\n    \"entries\": [{\"detailType\": \"X\", \"detail_struct\": {\"a\": 1}, \"time\": \"2024-01-02T03:04:05Z\"}]\n  }' 127.0.0.1:50051 partnerevents.v1.PartnerEvents/PutPartnerEvents\n{\n  \"batchId\": \"\"\n}\n";
    c.check(&Kind::Shell { session: true }, good).unwrap();
    assert_eq!(c.counts.grpc_bodies, 1);
    let _ = std::fs::remove_dir_all(&c.scratch);
}
