//! The evidence report as one self-contained HTML page (pure): inline CSS and SVG, no
//! scripts, no network. Per database a timeline (RPO met or missed, backups, verifies,
//! drills) with the plain numbers beside it in tables.

use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};

use super::{DatabaseEvidence, Evidence};
use crate::timespec::{describe, rfc3339};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 90.0;

/// The whole page.
pub fn render(evidence: &Evidence) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>vault evidence report</title><style>{STYLE}</style></head><body>\n\
         <h1>Backup evidence report</h1>\n<p class=\"meta\">Generated {} by vault for \
         {}. Period: {} to {}. RPO target {} + {} grace. Computed from the backups, \
         verification records and drill records the repository holds.</p>\n",
        rfc3339(evidence.generated_at),
        escape(&evidence.repository),
        rfc3339(evidence.since),
        rfc3339(evidence.generated_at),
        describe(Duration::seconds(evidence.rpo_target_seconds)),
        describe(Duration::seconds(evidence.rpo_grace_seconds)),
    );
    if !evidence.unreadable.is_empty() {
        page.push_str(
            "<p class=\"bad\">Could not be read, so not shown below (check them with \
             <code>vault list</code> and <code>vault drill --history</code>):</p>\n<ul>\n",
        );
        for problem in &evidence.unreadable {
            let _ = writeln!(page, "<li>{}</li>", escape(problem));
        }
        page.push_str("</ul>\n");
    }
    for database in &evidence.databases {
        section(&mut page, evidence, database);
    }
    page.push_str("</body></html>\n");
    page
}

fn section(page: &mut String, evidence: &Evidence, db: &DatabaseEvidence) {
    let missed_total: i64 = db.rpo.missed.iter().map(|m| m.seconds()).sum();
    let verified_ok = db.verifies.iter().filter(|v| v.passed).count();
    let drills_ok = db.drills.iter().filter(|d| d.passed).count();
    let rpo_class = if db.rpo.missed.is_empty() {
        "ok"
    } else {
        "bad"
    };
    let _ = write!(
        page,
        "<section><h2>Database <code>{}</code></h2>\n<p class=\"summary\">\
         <span class=\"{rpo_class}\">RPO met {:.1}% of the period</span>; missed {} time(s), \
         {} in all. {} backup(s); {} verification(s), {} passed, {} failed; {} drill(s), \
         {} passed, {} failed.</p>\n",
        escape(&db.database),
        db.rpo.met_fraction * 100.0,
        db.rpo.missed.len(),
        describe(Duration::seconds(missed_total)),
        db.backups.len(),
        db.verifies.len(),
        verified_ok,
        db.verifies.len() - verified_ok,
        db.drills.len(),
        drills_ok,
        db.drills.len() - drills_ok,
    );
    timeline(page, evidence.since, evidence.generated_at, db);

    page.push_str("<h3>RPO missed</h3>\n");
    if db.rpo.missed.is_empty() {
        page.push_str("<p>Never in this period.</p>\n");
    } else {
        page.push_str("<table><tr><th>from</th><th>to</th><th>for</th></tr>\n");
        for m in &db.rpo.missed {
            let _ = writeln!(
                page,
                "<tr class=\"bad\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                rfc3339(m.from),
                rfc3339(m.to),
                describe(Duration::seconds(m.seconds()))
            );
        }
        page.push_str("</table>\n");
    }

    page.push_str(
        "<h3>Backups</h3>\n<table><tr><th>backup</th><th>started</th><th>took</th>\
         <th>stored bytes</th><th>verified</th><th>retention</th><th>readable by</th>\
         <th>signed by</th></tr>\n",
    );
    for b in &db.backups {
        let verified = match b.verified {
            Some(true) => "<td class=\"ok\">passed</td>",
            Some(false) => "<td class=\"bad\">FAILED</td>",
            None => "<td>not yet</td>",
        };
        let signed = match b.trust {
            "trusted" => format!("<td>{}</td>", escape(&b.signer)),
            _ => format!("<td class=\"bad\">{}</td>", escape(&b.signer)),
        };
        let retention = if b.trust != "trusted" {
            "not counted: no trusted signer vouches for it".to_string()
        } else if b.kept {
            format!("kept: {}", escape(&b.keep_reasons.join("; ")))
        } else {
            "deleted by the next prune".to_string()
        };
        let _ = writeln!(
            page,
            "<tr><td><code>{}</code>{}{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             {verified}<td>{retention}</td><td>{}</td>{signed}</tr>",
            escape(&b.id),
            b.label
                .as_deref()
                .map(|l| format!(" <em>{}</em>", escape(l)))
                .unwrap_or_default(),
            if b.pinned { " (pinned)" } else { "" },
            rfc3339(b.started_at),
            describe(b.finished_at - b.started_at),
            b.stored_bytes,
            escape(&b.readable_by.join(", ")),
        );
    }
    page.push_str("</table>\n<h3>Verifications</h3>\n");
    if db.verifies.is_empty() {
        page.push_str("<p>None in this period.</p>\n");
    } else {
        page.push_str("<table><tr><th>at</th><th>backup</th><th>result</th></tr>\n");
        for v in &db.verifies {
            let _ = writeln!(
                page,
                "<tr class=\"{}\"><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                if v.passed { "ok" } else { "bad" },
                rfc3339(v.at),
                escape(&v.backup_id),
                if v.passed { "passed" } else { "FAILED" }
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("<h3>Drills</h3>\n");
    if db.drills.is_empty() {
        page.push_str("<p>None in this period.</p>\n");
    } else {
        page.push_str(
            "<table><tr><th>finished</th><th>backup</th><th>result</th><th>RTO</th>\
             <th>RTO target</th><th>RPO</th><th>RPO target</th><th>why not</th></tr>\n",
        );
        for d in &db.drills {
            let _ = writeln!(
                page,
                "<tr class=\"{}\"><td>{}</td><td><code>{}</code></td><td>{}</td>\
                 <td class=\"num\">{:.1} s</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{:.1} s</td><td class=\"num\">{} s</td><td>{}</td></tr>",
                if d.passed { "ok" } else { "bad" },
                rfc3339(d.finished_at),
                escape(&d.backup_id),
                if d.passed { "passed" } else { "FAILED" },
                d.rto_seconds,
                d.rto_target_seconds
                    .map_or("none".to_string(), |t| format!("{t} s")),
                d.rpo_seconds,
                d.rpo_target_seconds,
                escape(&d.failures.join("; "))
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("</section>\n");
}

/// The period as an SVG strip: the RPO band (green met, red missed), then rows of markers
/// for backups, verifies and drills, each with a tooltip; dates along the bottom.
fn timeline(page: &mut String, since: DateTime<Utc>, now: DateTime<Utc>, db: &DatabaseEvidence) {
    let span = (now - since).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        LEFT + ((t - since).num_milliseconds() as f64 / span).clamp(0.0, 1.0)
            * (WIDTH - LEFT - 10.0)
    };
    let _ = write!(
        page,
        "<svg class=\"timeline\" width=\"{WIDTH}\" height=\"150\" viewBox=\"0 0 {WIDTH} 150\" \
         role=\"img\" aria-label=\"timeline of {}\">\n\
         <text x=\"4\" y=\"24\">RPO</text><text x=\"4\" y=\"54\">backups</text>\
         <text x=\"4\" y=\"84\">verifies</text><text x=\"4\" y=\"114\">drills</text>\n\
         <rect x=\"{LEFT}\" y=\"10\" width=\"{:.1}\" height=\"20\" class=\"met\"/>\n",
        escape(&db.database),
        WIDTH - LEFT - 10.0
    );
    for m in &db.rpo.missed {
        let _ = writeln!(
            page,
            "<rect x=\"{:.1}\" y=\"10\" width=\"{:.1}\" height=\"20\" class=\"missed\">\
             <title>RPO missed {} to {}</title></rect>",
            x(m.from),
            (x(m.to) - x(m.from)).max(1.0),
            rfc3339(m.from),
            rfc3339(m.to)
        );
    }
    for b in &db.backups {
        let _ = writeln!(
            page,
            "<circle cx=\"{:.1}\" cy=\"50\" r=\"5\" class=\"backup\"><title>backup {} \
             finished {}</title></circle>",
            x(b.finished_at),
            escape(&b.id),
            rfc3339(b.finished_at)
        );
    }
    for v in &db.verifies {
        let _ = writeln!(
            page,
            "<rect x=\"{:.1}\" y=\"75\" width=\"9\" height=\"9\" class=\"{}\"><title>verify of \
             {} {} at {}</title></rect>",
            x(v.at) - 4.5,
            if v.passed { "pass" } else { "fail" },
            escape(&v.backup_id),
            if v.passed { "passed" } else { "FAILED" },
            rfc3339(v.at)
        );
    }
    for d in &db.drills {
        let cx = x(d.finished_at);
        let _ = writeln!(
            page,
            "<polygon points=\"{:.1},104 {:.1},116 {:.1},116\" class=\"{}\"><title>drill {} \
             at {}: RTO {:.1} s, RPO {:.1} s</title></polygon>",
            cx,
            cx - 6.0,
            cx + 6.0,
            if d.passed { "pass" } else { "fail" },
            if d.passed { "passed" } else { "FAILED" },
            rfc3339(d.finished_at),
            d.rto_seconds,
            d.rpo_seconds
        );
    }
    for i in 0..=4 {
        let t = since + Duration::milliseconds((span * f64::from(i) / 4.0) as i64);
        let _ = writeln!(
            page,
            "<text x=\"{:.1}\" y=\"142\" class=\"tick\">{}</text>",
            x(t) - if i == 4 { 110.0 } else { 0.0 },
            t.format("%Y-%m-%d %H:%M")
        );
    }
    page.push_str("</svg>\n");
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
.meta{color:#555}table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;font-size:.9em;overflow-wrap:anywhere}\
.num{text-align:right}.ok{color:#17612a}.bad{color:#a4161a;font-weight:bold}\
svg.timeline{border:1px solid #ddd;background:#fafafa}\
svg .met{fill:#b7e4c7}svg .missed{fill:#e5383b}svg .backup{fill:#1d4ed8}\
svg .pass{fill:#2d6a4f}svg .fail{fill:#d00000}svg text{font-size:12px;fill:#333}\
svg .tick{font-size:11px;fill:#666}";

#[cfg(test)]
mod tests {
    use super::super::{BackupEvidence, Interval, RpoTimeline, VerifyEvent};
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn the_page_says_what_was_missed_and_failed_and_escapes_names() {
        let evidence = Evidence {
            format_version: 1,
            generated_at: at("2026-12-02T00:00:00Z"),
            since: at("2026-12-01T00:00:00Z"),
            repository: "s3://bucket/<prefix>".into(),
            rpo_target_seconds: 6 * 3600,
            rpo_grace_seconds: 3600,
            unreadable: vec!["manifest `manifests/app/x.json` is not JSON".into()],
            databases: vec![DatabaseEvidence {
                database: "app".into(),
                backups: vec![BackupEvidence {
                    id: "20261201T010000Z-abcdef".into(),
                    started_at: at("2026-12-01T01:00:00Z"),
                    finished_at: at("2026-12-01T01:05:00Z"),
                    stored_bytes: 1234,
                    label: None,
                    pinned: false,
                    verified: Some(false),
                    kept: true,
                    keep_reasons: vec!["newest backup of its database".into()],
                    readable_by: vec!["ops-laptop".into()],
                    trust: "untrusted",
                    signer: "untrusted (SHA256:x: its key is not in [trust] signers)".into(),
                }],
                verifies: vec![VerifyEvent {
                    backup_id: "20261201T010000Z-abcdef".into(),
                    at: at("2026-12-01T02:00:00Z"),
                    passed: false,
                }],
                drills: vec![],
                rpo: RpoTimeline {
                    met_fraction: 0.25,
                    missed: vec![Interval {
                        from: at("2026-12-01T08:05:00Z"),
                        to: at("2026-12-02T00:00:00Z"),
                    }],
                },
            }],
        };
        let page = render(&evidence);
        assert!(page.contains("s3://bucket/&lt;prefix&gt;"));
        assert!(page.contains("RPO met 25.0% of the period"), "{page}");
        assert!(page.contains("<td class=\"bad\">FAILED</td>"));
        assert!(page.contains("<title>RPO missed 2026-12-01T08:05:00Z"));
        assert!(page.contains("ops-laptop"));
        assert!(
            page.contains("not counted: no trusted signer vouches for it"),
            "{page}"
        );
        assert!(page.contains("<li>manifest `manifests/app/x.json` is not JSON</li>"));
        assert!(!page.contains("<script"));
    }
}
