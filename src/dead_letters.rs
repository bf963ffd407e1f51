//! `partner-events-gateway dead-letters`: the operators' shell client of the
//! `DeadLetters` service (`list`, `show`, `replay`, `purge`).
//!
//! It connects as `send` does ([`send::connect`]: the same address, TLS and
//! token flags). A gateway answers for its own durable queue only: with
//! several replicas, name the replica (deploy/README.md).
//!
//! Exit codes: 0 when everything asked was done, 1 when a receipt asked for
//! is not a dead letter on that gateway ([`Found::SomeMissing`], or
//! NOT_FOUND), 2 for a usage error, a connection that failed, or a call the
//! gateway refused (its gRPC status is printed: code and message).

use std::io::Write;

use serde_json::json;

use crate::{
    proto::{
        dead_letters_client::DeadLettersClient, DeadLetter, DeadLetterSelection,
        GetDeadLetterRequest, ListDeadLettersRequest, PurgeDeadLettersRequest,
        ReplayDeadLettersRequest,
    },
    send::{self, ConnectArgs, GatewayChannel},
};

/// `dead-letters` and its flags.
#[derive(clap::Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

/// The four operations.
#[derive(clap::Subcommand)]
pub enum DeadLettersCommand {
    /// Dead letters oldest first (every page): a table, or JSON lines.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Print at most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// Dead letters asked for per call.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// One dead letter, its entry and its last error.
    Show {
        /// Its receipt id (32 hex digits, from `send --durable` or `list`).
        receipt: String,
        /// Include the event's detail (customer data).
        #[arg(long)]
        detail: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Queue dead letters again (with a whole new maximum delivery age).
    Replay(Selection),
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        selection: Selection,
        /// Required with --all: it deletes every dead letter it matches.
        #[arg(long)]
        yes: bool,
    },
}

/// Which dead letters `replay` and `purge` act on.
#[derive(clap::Args)]
pub struct Selection {
    /// Receipt ids.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub receipts: Vec<String>,
    /// Every dead letter (narrowed by --tenant and --code).
    #[arg(long)]
    pub all: bool,
    /// With --all: only this tenant's.
    #[arg(long)]
    pub tenant: Option<String>,
    /// With --all: only those with this error code.
    #[arg(long)]
    pub code: Option<String>,
}

impl Selection {
    fn to_proto(&self) -> DeadLetterSelection {
        DeadLetterSelection {
            receipt_ids: self.receipts.clone(),
            tenant_id: self.tenant.clone().unwrap_or_default(),
            error_code: self.code.clone().unwrap_or_default(),
            all: self.all,
        }
    }
}

/// Whether everything asked for was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    All,
    /// Some receipt ids named are not dead letters on this gateway.
    SomeMissing,
}

/// Exit code for a receipt asked for that is not a dead letter.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit code for usage errors, connections and refused calls.
pub const EXIT_USAGE: u8 = 2;

/// Why `dead-letters` could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DeadLettersError {
    /// Connecting (address, TLS files, token).
    #[error("{0}")]
    Connect(String),
    /// The gateway answered the call with an error.
    #[error("{call}: {code:?}: {message}", code = .status.code(), message = .status.message())]
    Status {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("purge --all deletes every dead letter it matches for good: add --yes")]
    PurgeNeedsYes,
    #[error("--tenant and --code narrow --all: with receipt ids, leave them out")]
    FilterNeedsAll,
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl DeadLettersError {
    /// 1 for NOT_FOUND, 2 otherwise (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Status { status, .. } if status.code() == tonic::Code::NotFound => EXIT_NOT_FOUND,
            _ => EXIT_USAGE,
        }
    }
}

fn refused(call: &'static str) -> impl FnOnce(tonic::Status) -> DeadLettersError {
    move |status| DeadLettersError::Status { call, status }
}

/// Runs one `dead-letters` command, writing its answer to `out` (not-found
/// receipts and summaries go to stderr).
pub async fn run(
    args: DeadLettersArgs,
    out: &mut (dyn Write + Send),
) -> Result<Found, DeadLettersError> {
    // (clap's `requires = "all"` holds for a flag that is always set, to
    // false by default: checked here instead.)
    if let DeadLettersCommand::Replay(selection) | DeadLettersCommand::Purge { selection, .. } =
        &args.command
    {
        if !selection.all && (selection.tenant.is_some() || selection.code.is_some()) {
            return Err(DeadLettersError::FilterNeedsAll);
        }
    }
    if let DeadLettersCommand::Purge {
        selection,
        yes: false,
    } = &args.command
    {
        if selection.all {
            return Err(DeadLettersError::PurgeNeedsYes);
        }
    }
    let tls = args.connect.client_tls();
    let channel = send::connect(
        &args.connect.addr,
        tls.as_ref(),
        args.connect.token.as_deref(),
    )
    .await
    .map_err(DeadLettersError::Connect)?;
    let mut client = DeadLettersClient::new(channel);
    match args.command {
        DeadLettersCommand::List {
            tenant,
            json,
            limit,
            page_size,
        } => list(&mut client, tenant, json, limit, page_size, out).await,
        DeadLettersCommand::Show {
            receipt,
            detail,
            json,
        } => {
            let d = client
                .get_dead_letter(GetDeadLetterRequest {
                    receipt_id: receipt,
                    include_detail: detail,
                })
                .await
                .map_err(refused("GetDeadLetter"))?
                .into_inner();
            if json {
                writeln!(out, "{}", to_json(&d, detail))?;
            } else {
                write_text(&d, detail, out)?;
            }
            Ok(Found::All)
        }
        DeadLettersCommand::Replay(selection) => {
            let r = client
                .replay_dead_letters(ReplayDeadLettersRequest {
                    selection: Some(selection.to_proto()),
                })
                .await
                .map_err(refused("ReplayDeadLetters"))?
                .into_inner();
            writeln!(out, "replayed {}", r.replayed)?;
            Ok(not_found(&r.not_found))
        }
        DeadLettersCommand::Purge { selection, .. } => {
            let r = client
                .purge_dead_letters(PurgeDeadLettersRequest {
                    selection: Some(selection.to_proto()),
                })
                .await
                .map_err(refused("PurgeDeadLetters"))?
                .into_inner();
            writeln!(out, "purged {}", r.purged)?;
            Ok(not_found(&r.not_found))
        }
    }
}

fn not_found(ids: &[String]) -> Found {
    for id in ids {
        eprintln!("not found: {id} is not a dead letter on this gateway");
    }
    if ids.is_empty() {
        Found::All
    } else {
        Found::SomeMissing
    }
}

/// Every page, oldest first, up to `limit`.
async fn list(
    client: &mut DeadLettersClient<GatewayChannel>,
    tenant: Option<String>,
    json: bool,
    limit: Option<u64>,
    page_size: u32,
    out: &mut (dyn Write + Send),
) -> Result<Found, DeadLettersError> {
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut shown = 0u64;
    let mut total = 0;
    let mut page_token = String::new();
    loop {
        let left = limit.map_or(u64::MAX, |l| l - shown);
        if left == 0 {
            break;
        }
        let page = client
            .list_dead_letters(ListDeadLettersRequest {
                tenant_id: tenant.clone().unwrap_or_default(),
                page_size: page_size.min(left.try_into().unwrap_or(u32::MAX)),
                page_token,
            })
            .await
            .map_err(refused("ListDeadLetters"))?
            .into_inner();
        total = page.total;
        for d in page.dead_letters.iter().take(left as usize) {
            shown += 1;
            if json {
                writeln!(out, "{}", to_json(d, false))?;
            } else {
                rows.push([
                    d.receipt_id.clone(),
                    d.tenant_id.clone(),
                    d.batch_id.clone(),
                    d.index.to_string(),
                    d.error_code.clone(),
                    d.attempts.to_string(),
                    time_text(d.dead_lettered_time.as_ref()),
                ]);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if !json {
        write_table(
            [
                "RECEIPT",
                "TENANT",
                "BATCH",
                "INDEX",
                "ERROR CODE",
                "ATTEMPTS",
                "DEAD-LETTERED",
            ],
            &rows,
            out,
        )?;
    }
    out.flush()?;
    eprintln!("{shown} of {total} dead letters");
    Ok(Found::All)
}

/// Columns padded to their widest cell, two spaces apart.
fn write_table<const N: usize>(
    header: [&str; N],
    rows: &[[String; N]],
    out: &mut (dyn Write + Send),
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(header))?;
    for row in rows {
        writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
    }
    Ok(())
}

/// RFC 3339 (UTC, seconds), or `-` when unset.
fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(t.seconds.max(0) as u64)
        + std::time::Duration::from_nanos(t.nanos.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn to_json(d: &DeadLetter, with_detail: bool) -> serde_json::Value {
    let mut v = json!({
        "receipt_id": d.receipt_id,
        "tenant_id": d.tenant_id,
        "batch_id": d.batch_id,
        "index": d.index,
        "source": d.source,
        "region": d.region,
        "detail_type": d.detail_type,
        "resources": d.resources,
        "size_bytes": d.size_bytes,
        "error_code": d.error_code,
        "error_message": d.error_message,
        "attempts": d.attempts,
        "accepted_time": time_text(d.accepted_time.as_ref()),
        "dead_lettered_time": time_text(d.dead_lettered_time.as_ref()),
        "redelivered": d.redelivered,
    });
    if with_detail {
        v["detail"] = json!(d.detail);
    }
    v
}

fn write_text(
    d: &DeadLetter,
    with_detail: bool,
    out: &mut (dyn Write + Send),
) -> std::io::Result<()> {
    let mut fields = vec![
        ("receipt", d.receipt_id.clone()),
        ("tenant", d.tenant_id.clone()),
        ("batch", d.batch_id.clone()),
        ("index", d.index.to_string()),
        ("source", d.source.clone()),
        ("region", d.region.clone()),
        ("detail type", d.detail_type.clone()),
        ("resources", d.resources.join(", ")),
        ("size bytes", d.size_bytes.to_string()),
        ("error code", d.error_code.clone()),
        ("error message", d.error_message.clone()),
        ("attempts", d.attempts.to_string()),
        ("accepted", time_text(d.accepted_time.as_ref())),
        ("dead-lettered", time_text(d.dead_lettered_time.as_ref())),
        (
            "redelivered",
            if d.redelivered {
                "yes (it may have reached EventBridge already)".into()
            } else {
                "no".into()
            },
        ),
    ];
    if with_detail {
        fields.push(("detail", d.detail.clone()));
    }
    for (name, value) in fields {
        writeln!(out, "{:<15}{value}", format!("{name}:"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_pads_each_column_to_its_widest_cell() {
        let mut out = Vec::new();
        write_table(
            ["A", "BB"],
            &[
                ["xxx".to_string(), "y".to_string()],
                ["z".to_string(), String::new()],
            ],
            &mut out,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A    BB\nxxx  y\nz\n");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let t = prost_types::Timestamp {
            seconds: 1_704_164_645,
            nanos: 0,
        };
        assert_eq!(time_text(Some(&t)), "2024-01-02T03:04:05Z");
        assert_eq!(time_text(None), "-");
    }
}
