//! `returner-host spool ...`: the spool API of a running host, from the
//! command line. The host holds the spool's file open, so the command asks
//! it over its own socket (or loopback TCP with the token) rather than
//! opening the file.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::config::{HostConfig, Listen};

/// How long the command waits for the host's answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What `spool` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SpoolCommand {
    /// Per returner: writes waiting, bytes, the oldest's age, dead letters and the last delivery error.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Writes that can never be delivered, kept with their error.
    #[command(name = "dead-letters", subcommand)]
    DeadLetters(DeadLetterCommand),
}

/// What `spool dead-letters` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// List a returner's dead letters (JSON).
    List {
        /// The returner.
        returner: String,
    },
    /// Queue a returner's dead letters (all, or those given) again, at the end.
    Retry {
        /// The returner.
        returner: String,
        /// A dead letter's number (`seq` in the listing); repeat for more.
        #[arg(long = "seq")]
        seqs: Vec<u64>,
    },
    /// Delete a returner's dead letters (all, or those given).
    Drop {
        /// The returner.
        returner: String,
        /// A dead letter's number (`seq` in the listing); repeat for more.
        #[arg(long = "seq")]
        seqs: Vec<u64>,
    },
}

/// Run `command` against the host `config` describes; prints the answer.
pub fn run(config: &HostConfig, command: &SpoolCommand) -> anyhow::Result<()> {
    let token = config.server.token_file.as_deref().map(crate::ingest::read_token).transpose()?;
    let ask = |method: &str, path: &str, body: &str| request(&config.server.listen, token.as_deref(), method, path, body);
    match command {
        SpoolCommand::Status { json } => {
            let answer = ask("GET", "/v1/spool", "")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&answer["queues"])?);
            } else {
                print_status(&answer["queues"]);
            }
        }
        SpoolCommand::DeadLetters(DeadLetterCommand::List { returner }) => {
            let answer = ask("GET", &format!("/v1/spool/{returner}/dead-letters"), "")?;
            println!("{}", serde_json::to_string_pretty(&answer["dead_letters"])?);
        }
        SpoolCommand::DeadLetters(DeadLetterCommand::Retry { returner, seqs } | DeadLetterCommand::Drop { returner, seqs }) => {
            let action = if matches!(command, SpoolCommand::DeadLetters(DeadLetterCommand::Retry { .. })) { "retry" } else { "drop" };
            let body = if seqs.is_empty() { String::new() } else { serde_json::json!({ "seqs": seqs }).to_string() };
            let answer = ask("POST", &format!("/v1/spool/{returner}/dead-letters/{action}"), &body)?;
            let n = answer["result"].as_u64().unwrap_or(0);
            println!("{n} dead letter{} {}", if n == 1 { "" } else { "s" }, if action == "retry" { "queued again" } else { "dropped" });
        }
    }
    Ok(())
}

fn print_status(queues: &Value) {
    println!("{:<20} {:>10} {:>12} {:>10} {:>8}  LAST ERROR", "RETURNER", "WAITING", "BYTES", "OLDEST_S", "DEAD");
    for q in queues.as_array().into_iter().flatten() {
        let name = q["returner"].as_str().unwrap_or("?");
        let served = if q["served"].as_bool() == Some(false) { " (not served)" } else { "" };
        let oldest = q["oldest_age_seconds"].as_f64().map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
        let error = match (q["last_error"].as_str(), q["failing_for_seconds"].as_f64()) {
            (Some(e), Some(s)) => format!("failing for {s:.0} s: {e}"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<20} {:>10} {:>12} {:>10} {:>8}  {error}",
            format!("{name}{served}"),
            q["items"].to_string(),
            q["bytes"].to_string(),
            oldest,
            q["dead_items"].to_string()
        );
    }
}

/// One HTTP/1.1 request to the host; the JSON answer, or its error.
fn request(listen: &Listen, token: Option<&str>, method: &str, path: &str, body: &str) -> anyhow::Result<Value> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = Vec::new();
    match listen {
        Listen::Unix(p) => {
            let mut s = std::os::unix::net::UnixStream::connect(p)
                .with_context(|| format!("connecting to the host at unix:{} (is `returner-host serve` running?)", p.display()))?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.write_all(head.as_bytes())?;
            s.write_all(body.as_bytes())?;
            s.read_to_end(&mut raw)?;
        }
        Listen::Tcp(a) => {
            let mut s = std::net::TcpStream::connect_timeout(a, TIMEOUT)
                .with_context(|| format!("connecting to the host at tcp:{a} (is `returner-host serve` running?)"))?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.write_all(head.as_bytes())?;
            s.write_all(body.as_bytes())?;
            s.read_to_end(&mut raw)?;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("the host's answer is not HTTP")?;
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("the host's answer has no status")?;
    let json: Value = serde_json::from_str(body).with_context(|| format!("the host answered {status} with: {body}"))?;
    if status != 200 {
        bail!(
            "the host answered {status} {}: {}",
            json["error"]["kind"].as_str().unwrap_or("?"),
            json["error"]["message"].as_str().unwrap_or(body)
        );
    }
    Ok(json)
}
