//! The suite's report: a progress line per case as it finishes, then a
//! summary as human text, JUnit XML (what CI systems read) or JSON.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::cases::Rule;

/// How the report is printed on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text: a line per case as it finishes, then a summary.
    #[default]
    Human,
    /// JUnit XML (one testsuite, a testcase per case); progress on stderr.
    Junit,
    /// One JSON document; progress on stderr.
    Json,
}

/// How one case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The rule holds.
    Pass,
    /// The rule is broken; why.
    Fail(String),
    /// Not run, and why (a function the case needs is not implemented).
    Skip(String),
}

/// One case's result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The rule it checks.
    pub rule: Rule,
    /// What it did, e.g. `get_load of a jid never stored`.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The module tested.
    pub module: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// The returner name whose grants it ran with.
    pub returner: String,
    /// Those grants, described.
    pub grants: Vec<String>,
    /// Every case, in order.
    pub cases: Vec<CaseResult>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| pred(&c.outcome)).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }

    /// Cases that were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }

    /// Ids of the rules that failed, each once, in order.
    pub fn failed_rules(&self) -> Vec<&'static str> {
        let mut rules = Vec::new();
        for case in &self.cases {
            if matches!(case.outcome, Outcome::Fail(_)) && !rules.contains(&case.rule.id) {
                rules.push(case.rule.id);
            }
        }
        rules
    }

    /// Print the report on stdout in `format`.
    pub fn print(&self, format: Format) -> std::io::Result<()> {
        let text = match format {
            Format::Human => self.human(),
            Format::Junit => self.junit(),
            Format::Json => serde_json::to_string_pretty(&self.json()).map_err(std::io::Error::other)? + "\n",
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    fn human(&self) -> String {
        let total = self.cases.len();
        let (failed, skipped) = (self.failed(), self.skipped());
        let mut s = format!(
            "{total} cases: {} passed, {failed} failed, {skipped} skipped in {:.1} s\n",
            total - failed - skipped,
            self.elapsed.as_secs_f64()
        );
        if failed > 0 {
            s.push_str(&format!("FAILED rules: {}\n", self.failed_rules().join(", ")));
        } else {
            s.push_str(&format!("{}: the returner contract holds\n", self.module.display()));
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        let cases: Vec<_> = self
            .cases
            .iter()
            .map(|c| {
                let (outcome, message) = match &c.outcome {
                    Outcome::Pass => ("pass", None),
                    Outcome::Fail(m) => ("fail", Some(m)),
                    Outcome::Skip(m) => ("skip", Some(m)),
                };
                json!({"rule": c.rule.id, "rule_text": c.rule.text, "name": c.name, "outcome": outcome,
                       "message": message, "elapsed_ms": c.elapsed.as_millis() as u64})
            })
            .collect();
        json!({
            "module": self.module, "sha256": self.sha256, "returner": self.returner, "grants": self.grants,
            "passed": self.cases.len() - self.failed() - self.skipped(), "failed": self.failed(),
            "skipped": self.skipped(), "failed_rules": self.failed_rules(),
            "elapsed_ms": self.elapsed.as_millis() as u64, "cases": cases,
        })
    }

    fn junit(&self) -> String {
        let (tests, failures, skipped) = (self.cases.len(), self.failed(), self.skipped());
        let time = self.elapsed.as_secs_f64();
        let suite = xml_escape(&format!("returner contract: {}", self.module.display()));
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        s.push_str(&format!(
            "<testsuites name=\"returner-host test\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">\n"
        ));
        s.push_str(&format!(
            "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">\n"
        ));
        s.push_str("    <properties>\n");
        let grants = self.grants.join("; ");
        let module = self.module.display().to_string();
        for (name, value) in [("module", module.as_str()), ("sha256", &self.sha256), ("returner", &self.returner), ("grants", &grants)] {
            s.push_str(&format!("      <property name=\"{name}\" value=\"{}\"/>\n", xml_escape(value)));
        }
        s.push_str("    </properties>\n");
        for case in &self.cases {
            let head = format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                case.rule.id,
                xml_escape(&case.name),
                case.elapsed.as_secs_f64()
            );
            match &case.outcome {
                Outcome::Pass => s.push_str(&format!("{head}/>\n")),
                Outcome::Skip(why) => s.push_str(&format!("{head}>\n      <skipped message=\"{}\"/>\n    </testcase>\n", xml_escape(why))),
                Outcome::Fail(why) => s.push_str(&format!(
                    "{head}>\n      <failure type=\"{}\" message=\"{}\">rule {}: {}\n{}</failure>\n    </testcase>\n",
                    case.rule.id,
                    xml_escape(why),
                    case.rule.id,
                    xml_escape(case.rule.text),
                    xml_escape(why)
                )),
            }
        }
        s.push_str("  </testsuite>\n</testsuites>\n");
        s
    }
}

/// Prints what is tested, then a line per case as it finishes: on stdout
/// for humans, on stderr when stdout carries a document.
pub(super) struct Progress {
    format: Format,
}

impl Progress {
    pub(super) fn new(format: Format) -> Self {
        Self { format }
    }

    fn say(&self, text: &str) {
        let _ = match self.format {
            Format::Human => std::io::stdout().lock().write_all(text.as_bytes()),
            Format::Junit | Format::Json => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }
}

impl super::Observer for Progress {
    fn start(&mut self, report: &Report, implemented: &[&str]) {
        let grants = if report.grants.is_empty() { "none".to_owned() } else { report.grants.join(", ") };
        self.say(&format!(
            "testing {} (sha256 {}) with the grants of `{}`: {grants}\nimplements: {}\n",
            report.module.display(),
            report.sha256.get(..12).unwrap_or(&report.sha256),
            report.returner,
            if implemented.is_empty() { "nothing".to_owned() } else { implemented.join(", ") }
        ));
    }

    fn case(&mut self, case: &CaseResult) {
        let ms = case.elapsed.as_millis();
        let line = match &case.outcome {
            Outcome::Pass => format!("  ok    {:<30} {} ({ms} ms)\n", case.rule.id, case.name),
            Outcome::Skip(why) => format!("  skip  {:<30} {} ({why})\n", case.rule.id, case.name),
            Outcome::Fail(why) => format!(
                "  FAIL  {:<30} {} ({ms} ms)\n        rule: {}\n        {why}\n",
                case.rule.id, case.name, case.rule.text
            ),
        };
        self.say(&line);
    }
}

/// Text made safe for XML attributes and content; characters XML 1.0
/// cannot hold at all (most control characters) become U+FFFD.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push_str(&format!("&#{};", c as u32)),
            c if (c as u32) < 0x20 => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escape_keeps_junit_well_formed() {
        assert_eq!(xml_escape("a<b & \"c\"\u{7}"), "a&lt;b &amp; &quot;c&quot;\u{FFFD}");
    }
}
