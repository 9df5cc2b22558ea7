//! Reports as JSON, CSV (one line per control) or a self-contained HTML page.

use karen_domain::{Error, Result};

use super::Report;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Html,
}

impl Format {
    /// Parses `json`, `csv` or `html`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            "html" => Ok(Self::Html),
            _ => Err(Error::invalid(
                Some("format"),
                format!(
                    "unknown format '{}'; use json, csv or html",
                    karen_domain::values::printable(text, 20)
                ),
            )),
        }
    }

    /// The media type of the rendered text.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

fn list_html(out: &mut String, items: &[String]) {
    out.push_str("<ul>");
    for item in items {
        out.push_str("<li>");
        out.push_str(&escape_html(item));
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

fn html(reports: &[Report]) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Karen compliance report</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%}\
         td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}\
         .pass{color:#176f2c}.fail{color:#b00020}.not_evidenced{color:#8a6d00}</style></head><body>",
    );
    for report in reports {
        let framework = report.framework.as_str();
        out.push_str(&format!(
            "<h1>{} report for tenant {}</h1><p>Generated {} · tenant id {} · {}</p>",
            escape_html(&framework.to_uppercase()),
            escape_html(&report.tenant_slug),
            escape_html(&report.generated_at.to_string()),
            escape_html(&report.tenant_id),
            report
                .summary
                .iter()
                .map(|(status, n)| format!("{n} {status}"))
                .collect::<Vec<_>>()
                .join(", "),
        ));
        out.push_str("<table><tr><th>Control</th><th>Status</th><th>Evidence</th><th>What Karen cannot evidence</th></tr>");
        for control in &report.controls {
            let status = control.status.as_str();
            out.push_str(&format!(
                "<tr><td><b>{}</b><br>{}</td><td class=\"{status}\">{status}</td><td>",
                escape_html(control.id),
                escape_html(control.title)
            ));
            list_html(&mut out, &control.evidence);
            out.push_str("</td><td>");
            list_html(&mut out, &control.gaps);
            out.push_str("</td></tr>");
        }
        out.push_str("</table>");
    }
    out.push_str("</body></html>\n");
    out
}

fn csv(reports: &[Report]) -> String {
    let mut out = String::from("tenant,framework,control,title,status,evidence,gaps\n");
    for report in reports {
        let framework = report.framework.as_str();
        for control in &report.controls {
            crate::csv::line(
                &mut out,
                &[
                    &report.tenant_slug,
                    framework,
                    control.id,
                    control.title,
                    control.status.as_str(),
                    &control.evidence.join("\n"),
                    &control.gaps.join("\n"),
                ],
            );
        }
    }
    out
}

/// Renders reports: JSON is one object for one report, an array for several.
pub fn render(reports: &[Report], format: Format) -> Result<String> {
    match format {
        Format::Json => {
            let text = match reports {
                [one] => serde_json::to_string_pretty(one),
                many => serde_json::to_string_pretty(many),
            };
            text.map_err(|e| Error::internal(format!("rendering a report: {e}")))
        }
        Format::Csv => Ok(csv(reports)),
        Format::Html => Ok(html(reports)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything_it_quotes() {
        assert_eq!(
            escape_html("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
